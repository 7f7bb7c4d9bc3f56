"""Shared fixtures: a real PostgreSQL server, a database per test, engines and settings.

The PostgreSQL server is started once per session from the Debian binaries, listening on
127.0.0.1 (free port) and on a socket in its own temp dir, with trust authentication and
fsync off. PostgreSQL refuses to run as root, so as root it runs as the ``postgres`` user.
Without the binaries the PostgreSQL tests are skipped, except in CI (``CI=true``), where
they fail: CI must never silently skip a backend.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import psycopg
import pytest
from sqlalchemy.engine import Engine

from imprint.settings import ENV_PREFIX, Settings
from imprint.store import db


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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


@pytest.fixture
def postgres_database(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database (its name), dropped after the test."""
    name = f"imprint_{uuid.uuid4().hex[:16]}"
    admin = postgres_server.url("postgres", driver="postgresql")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield name
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A SQLAlchemy URL of an empty database, once for SQLite and once for PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/imprint.db"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.url(request.getfixturevalue("postgres_database"))


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on ``database_url`` with every migration applied."""
    engine = db.create_engine(database_url)
    db.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """Settings with a data dir in tmp_path, the test database and a CA passphrase."""
    return Settings(
        data_dir=tmp_path / "data",
        database={"url": database_url},
        ca={"passphrase": "test-passphrase"},
    )


@pytest.fixture(autouse=True)
def _no_imprint_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's own IMPRINT_* variables out of every test."""
    for key in list(os.environ):
        if key.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
