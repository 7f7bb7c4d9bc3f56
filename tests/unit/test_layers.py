"""The layers keep to their rules (docs/architecture.md).

Read from the source, not imported: the application layer depends on no surface; the
console never reaches into the API's routes; no surface (API route, console page, CLI
command) constructs a store, they call operations that use the stores the composition
root built once; a store takes its connections from ``store.db`` only, which hands the
device plane its event loop's connections on PostgreSQL (decision 0016).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "src" / "imprint"


def _modules(package: str) -> list[Path]:
    return sorted((SOURCE / package).rglob("*.py"))


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """Every module an ``import`` or ``from … import`` names, at any depth of the file
    (imports inside functions count as much as those at the top)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def _store_constructions(path: Path) -> Iterator[tuple[int, str]]:
    """Calls of a store class (``SqlSomethingStore(...)`` and its kin) in the file."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            name = (
                node.func.id
                if isinstance(node.func, ast.Name)
                else node.func.attr
                if isinstance(node.func, ast.Attribute)
                else ""
            )
            if name.startswith("Sql") and name[3:4].isupper():
                yield node.lineno, name


def _own_connections(path: Path) -> Iterator[tuple[int, str]]:
    """Calls of ``<something>.begin()`` or ``.connect()`` on an engine attribute
    (``self._engine``, ``engine``) in the file: a connection of its own."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("begin", "connect")
        ):
            target = node.func.value
            name = (
                target.attr
                if isinstance(target, ast.Attribute)
                else target.id
                if isinstance(target, ast.Name)
                else ""
            )
            if name.lstrip("_") == "engine":
                yield node.lineno, f"{name}.{node.func.attr}()"


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(SOURCE.parent)}:{line}"


def test_the_application_layer_depends_on_no_surface() -> None:
    surfaces = ("imprint.api", "imprint.console", "imprint.cli")
    found = [
        f"{_where(path, line)} imports {module}"
        for path in _modules("app")
        for line, module in _imports(path)
        if module.startswith(surfaces)
    ]
    assert not found, found


def test_the_console_does_not_import_the_apis_routes() -> None:
    found = [
        f"{_where(path, line)} imports {module}"
        for path in _modules("console")
        for line, module in _imports(path)
        if module.startswith("imprint.api.routes")
    ]
    assert not found, found


@pytest.mark.parametrize("surface", ["api", "console", "cli"])
def test_no_surface_constructs_a_store(surface: str) -> None:
    found = [
        f"{_where(path, line)} constructs {name}"
        for path in _modules(surface)
        for line, name in _store_constructions(path)
    ]
    assert not found, found


def test_stores_take_connections_from_store_db_only() -> None:
    found = [
        f"{_where(path, line)} calls {call}"
        for path in _modules("store")
        if path.name != "db.py"
        for line, call in _own_connections(path)
    ]
    assert not found, found


def test_the_checks_see_what_they_look_for(tmp_path: Path) -> None:
    """The readers above find a nested import and a store construction, so an empty
    result means there is none, not that they looked at nothing."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def f(engine):\n"
        "    from imprint.api.routes.devices import router\n"
        "    return SqlDenyList(engine), store.SqlChannelStore(engine)\n"
        "def g(self):\n"
        "    with self._engine.begin() as conn, engine.connect() as other:\n"
        "        pass\n"
    )
    assert list(_imports(sample)) == [(2, "imprint.api.routes.devices")]
    assert sorted(_store_constructions(sample)) == [(3, "SqlChannelStore"), (3, "SqlDenyList")]
    assert sorted(_own_connections(sample)) == [(5, "_engine.begin()"), (5, "engine.connect()")]
    for package in ("app", "console", "cli", "store"):
        assert len(_modules(package)) > 5, package
