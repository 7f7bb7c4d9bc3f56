"""Every page of the documentation runs as written.

Each page (README.md and docs/**/*.md) is one test: its shell blocks run in the order
the page gives them, in one shell, against a fresh ``imprint serve`` of its own, and the
test fails when a command fails or prints something else than the page shows. The
conventions a page follows are in the README ("Docs that run") and tests/docs/pages.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import PostgresServer
from tests.docs.pages import read_page
from tests.docs.runner import REPO, check_step, page_session

PAGES = sorted(
    [REPO / "README.md", *(REPO / "docs").rglob("*.md")],
    key=lambda path: path.relative_to(REPO).as_posix(),
)

# Pages that need a server of the machine's besides imprint (see tests/conftest.py).
_NEEDS: dict[str, list[pytest.MarkDecorator]] = {
    "docs/configuration.md": [pytest.mark.postgres],
}
#: The port of the PostgreSQL server the PostgreSQL page's commands name.
DOCUMENTED_POSTGRES_PORT = "55432"


def _param(path: Path) -> object:
    name = path.relative_to(REPO).as_posix()
    return pytest.param(path, id=name, marks=_NEEDS.get(name, []))


@pytest.mark.slow
@pytest.mark.parametrize("path", [_param(path) for path in PAGES])
def test_page_runs_as_written(path: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    page = read_page(path)
    if not page.steps:
        pytest.skip("no shell blocks")
    name = path.relative_to(REPO).as_posix()
    replacements = {}
    if request.node.get_closest_marker("postgres") is not None:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        replacements[DOCUMENTED_POSTGRES_PORT] = str(server.port)
    started = time.monotonic()
    with page_session(tmp_path / "page", page.server_config, replacements) as (shell, port):
        for step in page.steps:
            check_step(shell, port, step, f"{name}:{step.line}")
    print(f"{name}: {len(page.steps)} steps in {time.monotonic() - started:.1f} s")
