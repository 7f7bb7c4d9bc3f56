"""Shared fixtures: a real PostgreSQL server, a database per test, engines and settings.

The PostgreSQL server is started once per session from the Debian binaries, listening on
127.0.0.1 (free port) and on a socket in its own temp dir, with trust authentication and
fsync off. PostgreSQL refuses to run as root, so as root it runs as the ``postgres`` user.
Without the binaries the PostgreSQL tests are skipped, except in CI (``CI=true``), where
they fail: CI must never silently skip a backend.

Which backend a test runs on: every test that takes ``database_url`` (directly, or through
``engine``, ``settings`` or ``service``) runs on SQLite; it runs on PostgreSQL as well
when it is marked ``both_databases`` (see :func:`pytest_generate_tests`). Marked are the
storage tests (SQL of store/, migrations, unit of work, locking and concurrency) and a
smoke slice of every surface (a test or two of each integration module), so that every
route, mechanism and command is seen on PostgreSQL at least once without running the
whole service suite twice.

Made once per session (per xdist worker): the CA material of the ``settings`` fixture
(copied into each test's data directory, modes kept) and a migrated database per backend
(a SQLite file copied per test; a PostgreSQL template database cloned per test), so a
test starts from what ``imprint.runtime.prepare`` would have created without paying for
key generation and twelve migrations each time. ``database_url`` itself stays an empty
database, for the tests of migrations.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from itertools import cycle, islice
from pathlib import Path
from typing import NoReturn

import psycopg
import pytest
import structlog
from sqlalchemy.engine import Engine
from xdist.scheduler import LoadFileScheduling

from imprint.pki.material import init_ca
from imprint.settings import ENV_PREFIX, Settings
from imprint.store import db
from tests.stopping import finish_stopping

CA_PASSPHRASE = "test-passphrase"
TEMPLATE_DATABASE = "imprint_template"


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int

    def url(self, database: str, driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://postgres@{self.host}:{self.port}/{database}"


def _postgres_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/N/bin holding initdb and pg_ctl, else PATH's."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for candidate in versions:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    return Path(initdb).parent if initdb and pg_ctl else None


_PORTS_FROM = 10000  # the band the tests' servers listen in starts here


@cache
def _own_ports() -> Iterator[int] | None:
    """This test process's own ports, taken in turn, from where a random pick starts:
    its slice of a band below the kernel's ephemeral range, one slice per xdist worker.
    None where there is no such band (no ``/proc``, or a range starting too low for a
    slice of 50 ports a worker): the kernel then chooses.

    A port the kernel chose (``bind`` to port 0) comes from the ephemeral range, from
    which it also takes the local port of every outgoing connection: between choosing a
    port and a server's binding it, another test's client could take it ("Address
    already in use", seen in CI). The kernel hands out no port below that range, and
    the workers' slices do not overlap. Another test run on the machine at the same
    time uses the same slices, so :func:`free_port` still checks that a port is free."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    index = int(name) if name.isdigit() else 0
    size = min(500, (low - _PORTS_FROM) // workers)
    if size < 50 or index >= workers:
        return None
    first = _PORTS_FROM + index * size
    start = random.SystemRandom().randrange(size)
    return cycle([*range(first + start, first + size), *range(first, first + start)])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now and that no other test of this run, and
    no outgoing connection, will be given meanwhile (see :func:`_own_ports`)."""
    ports = _own_ports()
    if ports is None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    for port in islice(ports, 500):  # a bounded number of tries
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # a server of this run, or another program's, listens there
            return port
    raise RuntimeError("no free port left in this test process's slice")


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL is required in CI: {reason}")
    pytest.skip(f"PostgreSQL not available: {reason}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throw-away PostgreSQL server for the whole session, stopped at the end."""
    bin_dir = _postgres_bin_dir()
    if bin_dir is None:
        _unavailable("initdb and pg_ctl not found")
    as_root = os.geteuid() == 0
    if as_root and shutil.which("runuser") is None:
        _unavailable("running as root and runuser is missing")
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    workdir = Path(tempfile.mkdtemp(prefix="imprint-pg-"))
    data, sockets = workdir / "data", workdir / "sockets"
    sockets.mkdir()
    if as_root:
        try:
            for path in (workdir, sockets):
                shutil.chown(path, "postgres", "postgres")
        except LookupError:
            shutil.rmtree(workdir)
            _unavailable("running as root and there is no 'postgres' user")

    def run(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=60)

    port = free_port()
    log = workdir / "server.log"
    options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets}"
        " -c fsync=off -c full_page_writes=off -c synchronous_commit=off"
    )
    initdb = ["-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"]
    try:
        run(str(bin_dir / "initdb"), *initdb, "--no-sync")
        run(str(bin_dir / "pg_ctl"), "start", "-w", "-D", str(data), "-l", str(log), "-o", options)
    except subprocess.CalledProcessError as exc:
        details = exc.stderr.decode(errors="replace") + (log.read_text() if log.exists() else "")
        shutil.rmtree(workdir, ignore_errors=True)
        pytest.fail(f"cannot start PostgreSQL: {details}")
    try:
        yield PostgresServer("127.0.0.1", port)
    finally:
        subprocess.run(
            [*prefix, str(bin_dir / "pg_ctl"), "stop", "-m", "immediate", "-D", str(data)],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(workdir, ignore_errors=True)


def _create_database(server: PostgresServer, template: str | None = None) -> str:
    name = f"imprint_{uuid.uuid4().hex[:16]}"
    clone = f' TEMPLATE "{template}"' if template else ""
    with psycopg.connect(server.url("postgres", driver="postgresql"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"{clone}')
    return name


def _drop_database(server: PostgresServer, name: str) -> None:
    with psycopg.connect(server.url("postgres", driver="postgresql"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_database(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database (its name), dropped after the test."""
    name = _create_database(postgres_server)
    yield name
    _drop_database(postgres_server, name)


@pytest.fixture(scope="session")
def postgres_template(postgres_server: PostgresServer) -> str:
    """A database with every migration applied, made once, for ``CREATE DATABASE ...
    TEMPLATE``. Nothing stays connected to it (PostgreSQL refuses to copy it otherwise)."""
    with psycopg.connect(
        postgres_server.url("postgres", driver="postgresql"), autocommit=True
    ) as conn:
        conn.execute(f'CREATE DATABASE "{TEMPLATE_DATABASE}"')
    engine = db.create_engine(postgres_server.url(TEMPLATE_DATABASE))
    try:
        db.upgrade(engine)
    finally:
        engine.dispose()
    return TEMPLATE_DATABASE


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file with every migration applied, made once, copied per test. The engine
    is disposed first: the last connection to close checkpoints the WAL and removes it, so
    the main file alone holds the whole database."""
    path = tmp_path_factory.mktemp("sqlite-template") / "imprint.db"
    engine = db.create_engine(f"sqlite:///{path}")
    try:
        db.upgrade(engine)
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        engine.dispose()
    leftovers = [p.name for p in path.parent.glob(f"{path.name}-*")]  # -wal, -shm
    assert not leftovers, f"the SQLite template is not in one file: {leftovers}"
    return path


# Tests that need a server of the machine's are marked by where they are, so that
# `make test-fast` can leave them out with -m: PostgreSQL (the ``postgres`` mark of the
# database parameter), chromium (tests/browser) and Mosquitto (test_mqtt). The Makefile
# runs pytest-xdist with --dist loadfile: a module's tests stay on one worker, which
# keeps the DNS-SD tests (test_discovery), whose announcements every test on the
# machine's loopback would hear, from running beside each other. (--dist loadgroup with
# xdist_group marks would not do: pytest-xdist 3.8 renames node ids in a way pytest 9
# ignores, so the groups are silently split.)
_BY_PLACE = {
    "tests/browser/": pytest.mark.browser,
    "tests/integration/test_mqtt.py": pytest.mark.mosquitto,
}


# tests/docs runs one test per documentation page, each with a server of its own; as one
# file they would all run on one worker. Each page is a unit of its own instead, except
# that pages announcing by DNS-SD share the unit of test_discovery, so that they never
# run beside each other.
_DOCS_TEST = "tests/docs/test_docs.py::"
_DNS_SD_PAGES = ("[docs/services.md]",)
_DISCOVERY_TESTS = "tests/integration/test_discovery.py"


class _ScheduleByFileAndPage(LoadFileScheduling):
    def _split_scope(self, nodeid: str) -> str:
        if nodeid.startswith(_DOCS_TEST):
            return _DISCOVERY_TESTS if nodeid.endswith(_DNS_SD_PAGES) else nodeid
        return super()._split_scope(nodeid)


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """``--dist loadfile``, with every documentation page a unit of its own."""
    if config.getvalue("dist") != "loadfile":
        return None
    return _ScheduleByFileAndPage(config, log)  # type: ignore[arg-type]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = config.rootpath
    for item in items:
        place = item.path.relative_to(root).as_posix()
        for prefix, mark in _BY_PLACE.items():
            if place.startswith(prefix):
                item.add_marker(mark)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run tests that need a database on SQLite, and those marked ``both_databases`` on
    PostgreSQL too (why these: see the module docstring)."""
    if "backend" not in metafunc.fixturenames:
        return
    backends = [pytest.param("sqlite", id="sqlite")]
    if metafunc.definition.get_closest_marker("both_databases") is not None:
        backends.append(pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres))
    metafunc.parametrize("backend", backends, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """``sqlite``, or ``postgresql`` for the tests marked ``both_databases``."""
    return str(request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A SQLAlchemy URL of an empty database on ``backend``."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/imprint.db"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.url(request.getfixturevalue("postgres_database"))


@pytest.fixture
def migrated_database_url(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[str]:
    """A database on ``backend`` with every migration applied: a copy of the template."""
    if backend == "sqlite":
        target = tmp_path / "imprint.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), target)
        yield f"sqlite:///{target}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = _create_database(server, template=request.getfixturevalue("postgres_template"))
    yield server.url(name)
    finish_stopping()  # a server still stopping holds connections to it
    _drop_database(server, name)


@pytest.fixture
def engine(migrated_database_url: str) -> Iterator[Engine]:
    """An engine on a database with every migration applied (``upgrade`` finds nothing to
    do; it runs all the same, as a start would)."""
    engine = db.create_engine(migrated_database_url)
    db.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def ca_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``ca/`` directory ``init_ca`` makes for the tests' passphrase, made once."""
    data_dir = tmp_path_factory.mktemp("ca-template") / "data"
    with pytest.MonkeyPatch.context() as patch:
        _drop_imprint_environment(patch)
        settings = Settings(data_dir=data_dir, ca={"passphrase": CA_PASSPHRASE})
        init_ca(settings)
    return settings.ca_dir


def copy_ca(ca_template: Path, data_dir: Path) -> None:
    """Give ``data_dir`` the template CA, keeping the modes (0700 directory, 0600 keys)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    shutil.copytree(ca_template, data_dir / "ca")


@pytest.fixture
def settings(tmp_path: Path, migrated_database_url: str, ca_template: Path) -> Settings:
    """Settings with a data dir in tmp_path holding a CA (a copy of the session's), a
    migrated test database and the CA passphrase. Tests of a first start (creating the CA
    and the schema) make their own settings."""
    copy_ca(ca_template, tmp_path / "data")
    return Settings(
        data_dir=tmp_path / "data",
        database={"url": migrated_database_url},
        ca={"passphrase": CA_PASSPHRASE},
    )


def _drop_imprint_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(key)


@pytest.fixture(scope="session", autouse=True)
def _servers_stopped_at_the_end() -> Iterator[None]:
    """No server stopping in the background outlives the session (tests/stopping.py)."""
    yield
    finish_stopping()


@pytest.fixture(autouse=True)
def _no_imprint_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Keep the developer's own IMPRINT_* variables, and her command line's login
    profiles, out of every test."""
    _drop_imprint_environment(monkeypatch)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))


# The loggers imprint.logs.configure_logging changes besides the root logger.
_CONFIGURED_LOGGERS = (
    "",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "alembic",
    "imprint.http.requests",
)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Undo what a test did to the process's logging (configure_logging, from a test of
    it or a command run in-process), so that no later test depends on the order tests
    run in: after it the root logger was at INFO with a handler on a closed stream."""
    saved = {
        name: (logger.handlers[:], logger.level, logger.propagate, logger.disabled)
        for name in _CONFIGURED_LOGGERS
        for logger in [logging.getLogger(name)]
    }
    structlog_config = structlog.get_config()
    yield
    for name, (handlers, level, propagate, disabled) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate
        logger.disabled = disabled
    structlog.configure(**structlog_config)
