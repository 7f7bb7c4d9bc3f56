"""The servers a benchmark talks to, each a subprocess on 127.0.0.1 with a temp directory.

* :class:`ImprintServer`: ``imprint serve`` on SQLite or PostgreSQL;
* :class:`Postgres`: a throw-away PostgreSQL cluster (fsync on, as in production),
  started as the ``postgres`` user when we are root, like the test suite does;
* :class:`Cfssl`: ``cfssl serve`` signing with its own P-256 CA, over TLS, with or
  without its certificate database (``-db-config``, SQLite);
* :class:`Ceiling`: the minimal Python signer of :mod:`bench.ceiling`, over TLS.

:func:`cpu_seconds` and :func:`memory` read a process's counters from ``/proc``.
"""

from __future__ import annotations

import bisect
import ipaddress
import json
import math
import os
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VENV_BIN = Path(sys.executable).parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _family(pid: int) -> list[int]:
    """The process and its children (the worker processes of ``server.workers``)."""
    found = [pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds so far of a process (all its threads), its live children
    and the children it has waited for."""
    total = 0
    for member in _family(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
        if member == pid:
            total += int(fields[13]) + int(fields[14])
    return total / CLOCK_TICKS


def memory(pid: int) -> dict[str, float]:
    """Resident set size now and at its peak, in MB, summed over the process and its
    children (each worker process counts)."""
    values = {"VmRSS": 0.0, "VmHWM": 0.0}
    for member in _family(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            name, _, value = line.partition(":")
            if name in values:
                values[name] += int(value.split()[0]) / 1024
    return {"rss_mb": round(values["VmRSS"], 1), "peak_rss_mb": round(values["VmHWM"], 1)}


def _wait_for(url: str, context: ssl.SSLContext | None, process: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, context=context, timeout=2):  # noqa: S310
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within 60 s")


def _stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


class ImprintServer:
    """``imprint serve`` in a subprocess, with its own data directory."""

    def __init__(
        self, workdir: Path, database_url: str | None, label: str, workers: int = 1
    ) -> None:
        self.workers = workers
        self.workdir = workdir / f"imprint-{label}-w{workers}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.port = free_port()
        self.base_url = f"https://127.0.0.1:{self.port}"
        self.database_url = database_url or f"sqlite:///{self.data_dir}/imprint.db"
        self.label = label
        self._process: subprocess.Popen[bytes] | None = None

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMPRINT_")}
        env |= {
            "IMPRINT_DATA_DIR": str(self.data_dir),
            "IMPRINT_SERVER__PORT": str(self.port),
            "IMPRINT_DATABASE__URL": self.database_url,
            "IMPRINT_CA__PASSPHRASE": "bench-passphrase",
            "IMPRINT_SERVER__WORKERS": str(self.workers),
            # HAProxy's connections to the nodes come from one address (the load
            # generator's own come from many since 2026-12-07): the per-source cap (64)
            # is not what the bench measures.
            "IMPRINT_SERVER__LIMITS__MAX_CONNECTIONS_PER_SOURCE": "1024",
        }
        return env

    def start(self) -> None:
        log = (self.workdir / "server.log").open("ab")
        self._process = subprocess.Popen(
            [str(VENV_BIN / "imprint"), "serve"],
            cwd=self.workdir,
            env=self.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        root = self.data_dir / "ca" / "root.crt"
        deadline = time.monotonic() + 180  # a first start makes a CA; slow on a busy machine
        while not root.exists() and time.monotonic() < deadline:
            if self._process.poll() is not None:
                log_tail = (self.workdir / "server.log").read_text()[-2000:]
                raise RuntimeError(f"imprint serve exited during start-up:\n{log_tail}")
            time.sleep(0.1)
        _wait_for(f"{self.base_url}/healthz", self.context(), self._process)

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.root_cert))

    @property
    def root_cert(self) -> Path:
        return self.data_dir / "ca" / "root.crt"

    @property
    def admin_token(self) -> str:
        return (self.data_dir / "admin-token").read_text().strip()

    @property
    def cli_path(self) -> Path:
        return VENV_BIN / "imprint"

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run an ``imprint`` command on this server's data (the server may keep running)."""
        return subprocess.run(
            [str(VENV_BIN / "imprint"), *args],
            cwd=self.workdir,
            env=self.environment(),
            capture_output=True,
            text=True,
            check=True,
            timeout=timeout,
        )

    def commit_groups(self, tries: int = 60) -> dict[str, dict[str, float]]:
        """Each worker's commit-group metrics so far, by process id (SQLite): ``groups``,
        ``members``, ``waits`` and ``wait_s`` (the groups that found the writer lock
        held, and their waits), ``held_s``. Each connection reaches whichever worker
        accepts it, so ``/metrics`` is asked until every worker has answered (at most
        ``tries`` times; the workers not reached are left out)."""
        wanted = {
            "imprint_commit_group_members_count": "groups",
            "imprint_commit_group_members_sum": "members",
            "imprint_writer_lock_wait_seconds_count": "waits",
            "imprint_writer_lock_wait_seconds_sum": "wait_s",
            "imprint_writer_lock_held_seconds_sum": "held_s",
        }
        found: dict[str, dict[str, float]] = {}
        for _ in range(tries):
            if len(found) >= self.workers:
                break
            with urllib.request.urlopen(  # noqa: S310 (our own https URL)
                f"{self.base_url}/metrics", context=self.context(), timeout=5
            ) as response:
                text = response.read().decode()
            values: dict[str, float] = {}
            pid = None
            for line in text.splitlines():
                name, _, rest = line.partition(" ")
                if name in wanted:
                    values[wanted[name]] = float(rest)
                elif line.startswith("imprint_process_info{"):
                    pid = line.split('pid="', 1)[1].split('"', 1)[0]
            if pid is not None:
                found[pid] = values
        return found

    def stop(self) -> None:
        if self._process is not None:
            _stop(self._process)
            self._process = None


def libpq_url(database_url: str) -> str:
    """An imprint database URL (SQLAlchemy's ``postgresql+psycopg://``) as psycopg takes it."""
    return database_url.replace("postgresql+psycopg", "postgresql")


def _checkpoint_counters(conn: Any) -> str:
    """The query of the checkpoints started (timed, requested) and the buffers they wrote,
    on this server's version: ``pg_stat_checkpointer`` from PostgreSQL 17 on, before it
    ``pg_stat_bgwriter``."""
    import psycopg

    modern = "SELECT num_timed, num_requested, buffers_written FROM pg_stat_checkpointer"
    try:
        conn.execute(modern)
    except psycopg.errors.UndefinedTable:
        conn.rollback()
        return "SELECT checkpoints_timed, checkpoints_req, buffers_checkpoint FROM pg_stat_bgwriter"
    return modern


def postgres_activity(database_url: str) -> dict[str, float]:
    """The PostgreSQL server's background work so far, for
    :func:`postgres_activity_during`: checkpoints started (timed and requested; on
    PostgreSQL 17 the timed ones skipped too), the buffers checkpoints wrote, where the
    last completed checkpoint is in the WAL (``pg_control_checkpoint``), and the
    autovacuum and autoanalyze passes over each table of ``database_url``'s database,
    system catalogs included."""
    import psycopg

    with psycopg.connect(libpq_url(database_url)) as conn:
        found = conn.execute(_checkpoint_counters(conn)).fetchone()
        done = conn.execute(
            "SELECT checkpoint_lsn - '0/0'::pg_lsn FROM pg_control_checkpoint()"
        ).fetchone()
        vacuums = conn.execute(
            "SELECT coalesce(sum(autovacuum_count), 0), coalesce(sum(autoanalyze_count), 0)"
            " FROM pg_stat_all_tables"
        ).fetchone()
    assert found is not None
    assert done is not None
    assert vacuums is not None
    timed, requested, buffers = (int(v) for v in found)
    return {"checkpoints_started": timed + requested, "checkpoint_buffers": buffers,
            "last_checkpoint_done": float(done[0]), "table_autovacuums": int(vacuums[0]),
            "table_autoanalyzes": int(vacuums[1])}  # fmt: skip


class PostgresBackground:
    """What PostgreSQL's background processes did while a run lasted, sampled ten times
    a second: each autovacuum worker's pass and the database it works in (``VACUUM
    public.audit_log in bench_1a2b3c4d``, from ``pg_stat_activity``; autovacuum visits
    every database of the cluster), the buffers checkpoints wrote (as
    :func:`postgres_activity` reads them) and the WAL written (``pg_current_wal_lsn``).
    :meth:`by_second` lines them up with the seconds of a load run, to set beside the
    run's slow requests by the second they were due."""

    _AUTOVACUUM = (
        "SELECT query, datname FROM pg_stat_activity"
        " WHERE backend_type = 'autovacuum worker' AND query <> ''"
    )
    _WAL = "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"

    def __init__(self, database_url: str, every: float = 0.1) -> None:
        self._url = libpq_url(database_url)
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-background", daemon=True)
        # (time.monotonic(), WAL position, buffers checkpoints wrote, autovacuum passes)
        self._seen: list[tuple[float, float, int, list[str]]] = []
        self.error: str | None = None  # why sampling stopped early, if it did

    def __enter__(self) -> PostgresBackground:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        import psycopg

        try:
            with psycopg.connect(self._url, autocommit=True) as conn:
                written = _checkpoint_counters(conn)
                while True:
                    now = time.monotonic()
                    wal = conn.execute(self._WAL).fetchone()
                    counters = conn.execute(written).fetchone()
                    passes = [f"{query.removeprefix('autovacuum: ')} in {database}"
                              for query, database in conn.execute(self._AUTOVACUUM)]  # fmt: skip
                    assert wal is not None
                    assert counters is not None
                    self._seen.append((now, float(wal[0]), int(counters[2]), passes))
                    if self._stop.wait(self._every):
                        return
        except psycopg.Error as exc:  # the run goes on; its seconds show what was seen
            self.error = f"{type(exc).__name__}: {exc}"

    def by_second(self, started: float, ended: float) -> list[dict[str, Any]]:
        """For each second from ``started`` to ``ended`` (``time.monotonic()``; the last
        one may be partial): the WAL written (kB) and the buffers checkpoints wrote from
        the last sample taken by its start (or the first sample, if none was) to the last
        taken by its end, None when no sample was taken in it; and the autovacuum passes
        seen in it. A sample from before the start counts for no second."""
        seen = self._seen
        times = [at for at, *_ in seen]
        found = []
        for second in range(math.ceil(ended - started)):
            begin, end = started + second, min(started + second + 1, ended)
            first = max(0, bisect.bisect_right(times, begin) - 1)
            last = bisect.bisect_right(times, end) - 1
            sampled = last > first  # a sample taken in this second, after the first one
            passes = {p for at, _, _, running in seen if begin <= at < end for p in running}
            found.append({
                "wal_kb": round((seen[last][1] - seen[first][1]) / 1024) if sampled else None,
                "checkpoint_buffers": seen[last][2] - seen[first][2] if sampled else None,
                "autovacuum": sorted(passes),
            })  # fmt: skip
        return found


def postgres_activity_during(before: dict[str, float], after: dict[str, float]
                             ) -> dict[str, float | bool]:  # fmt: skip
    """What changed between two :func:`postgres_activity` readings, and whether a
    checkpoint completed in between."""
    during: dict[str, float | bool] = {
        key: after[key] - before[key] for key in after if key != "last_checkpoint_done"
    }
    during["checkpoint_completed"] = after["last_checkpoint_done"] != before["last_checkpoint_done"]
    return during


def _postgres_bin_dir() -> Path | None:
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for candidate in versions:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    return None


class Postgres:
    """A throw-away PostgreSQL cluster on 127.0.0.1 with trust authentication."""

    def __init__(self) -> None:
        bin_dir = _postgres_bin_dir()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found")
        self._bin = bin_dir
        self._prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self._workdir = Path(tempfile.mkdtemp(prefix="imprint-bench-pg-"))
        self._data = self._workdir / "data"
        self.port = free_port()
        self.version = bin_dir.parent.name

    def _run(self, *args: str) -> None:
        subprocess.run([*self._prefix, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        sockets = self._workdir / "sockets"
        sockets.mkdir()
        if self._prefix:
            for path in (self._workdir, sockets):
                shutil.chown(path, "postgres", "postgres")
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {sockets}"
            " -c shared_buffers=256MB -c max_connections=100"
        )
        initdb = ["-D", str(self._data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
        self._run(str(self._bin / "initdb"), *initdb, "--locale=C", "--no-sync")
        log = self._workdir / "server.log"
        self._run(
            str(self._bin / "pg_ctl"), "start", "-w", "-D", str(self._data), "-l", str(log),
            "-o", options,
        )  # fmt: skip

    def create_database(self, name: str) -> str:
        import psycopg

        admin = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        subprocess.run(
            [*self._prefix, str(self._bin / "pg_ctl"), "stop", "-m", "fast", "-D", str(self._data)],
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(self._workdir, ignore_errors=True)


# cfssl's certificate database on SQLite: the tables of its certdb migration for this
# version (the INSERT in the binary names these eight columns of ``certificates``).
CFSSL_TABLES = """
CREATE TABLE certificates (
  serial_number blob NOT NULL, authority_key_identifier blob NOT NULL, ca_label blob,
  status blob NOT NULL, reason int, expiry timestamp, revoked_at timestamp, pem blob NOT NULL,
  PRIMARY KEY (serial_number, authority_key_identifier));
CREATE TABLE ocsp_responses (
  serial_number blob NOT NULL, authority_key_identifier blob NOT NULL, body blob NOT NULL,
  expiry timestamp, PRIMARY KEY (serial_number, authority_key_identifier));
"""


@dataclass
class Cfssl:
    """``cfssl serve`` over TLS, signing CSRs with a P-256 CA of its own.

    With ``record``, it keeps each certificate it signs in its certificate database
    (``-db-config``): SQLite in WAL mode with ``synchronous=NORMAL``, as imprint's own,
    so that the comparison is like for like (imprint records each certificate too).
    cfssl writes the row after signing, in one statement and one commit.
    """

    workdir: Path
    record: bool = False
    port: int = 0
    pid: int = 0
    database: Path | None = None
    _process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("cfssl") is not None

    @staticmethod
    def version() -> str:
        result = subprocess.run(["cfssl", "version"], capture_output=True, text=True, check=False)
        return " ".join(result.stdout.split())

    def start(self) -> None:
        directory = self.workdir / ("cfssl-db" if self.record else "cfssl")
        directory.mkdir(parents=True, exist_ok=True)
        now = datetime.now(UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cfssl bench CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, True, True, False, False), True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        tls_key = ec.generate_private_key(ec.SECP256R1())
        tls = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(name)
            .public_key(tls_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                False,
            )
            .sign(key, hashes.SHA256())
        )
        pem = serialization.Encoding.PEM

        def private(k: ec.EllipticCurvePrivateKey) -> bytes:
            return k.private_bytes(
                pem, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
            )

        (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
        (directory / "ca-key.pem").write_bytes(private(key))
        (directory / "tls.pem").write_bytes(tls.public_bytes(pem))
        (directory / "tls-key.pem").write_bytes(private(tls_key))
        # The same kind of leaf imprint's device profile makes: client auth, 90 days.
        (directory / "config.json").write_text(
            '{"signing": {"default": {"expiry": "2160h",'
            ' "usages": ["digital signature", "client auth"]}}}'
        )
        database: list[str] = []
        if self.record:
            self.database = directory / "certs.db"
            with sqlite3.connect(self.database) as connection:
                connection.executescript(CFSSL_TABLES)
            source = f"file:{self.database}?_journal_mode=WAL&_synchronous=NORMAL"
            (directory / "db.json").write_text(
                json.dumps({"driver": "sqlite3", "data_source": source + "&_busy_timeout=5000"})
            )
            database = ["-db-config", "db.json"]
        self.port = free_port()
        log = (directory / "server.log").open("ab")
        self._process = subprocess.Popen(
            [
                "cfssl", "serve", "-address", "127.0.0.1", "-port", str(self.port),
                "-ca", "ca.pem", "-ca-key", "ca-key.pem", "-config", "config.json",
                "-tls-cert", "tls.pem", "-tls-key", "tls-key.pem", "-loglevel", "3",
                *database,
            ],
            cwd=directory,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.pid = self._process.pid
        self.ca_file = directory / "ca.pem"
        context = ssl.create_default_context(cafile=str(self.ca_file))
        _wait_for(f"https://127.0.0.1:{self.port}/api/v1/cfssl/health", context, self._process)

    def recorded(self) -> int | None:
        """How many certificates the database holds (None without one)."""
        if self.database is None:
            return None
        with sqlite3.connect(self.database) as connection:
            (count,) = connection.execute("SELECT count(*) FROM certificates").fetchone()
        return int(count)

    def stop(self) -> None:
        if self._process is not None:
            _stop(self._process)
            self._process = None


@dataclass
class Ceiling:
    """The minimal uvicorn + cryptography signer (:mod:`bench.ceiling`), over TLS."""

    workdir: Path
    port: int = 0
    pid: int = 0
    _process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        directory = self.workdir / "ceiling"
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        log = (directory / "server.log").open("ab")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.ceiling", str(directory), str(self.port)],
            cwd=Path(__file__).resolve().parent.parent,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.pid = self._process.pid
        self.ca_file = directory / "ca.pem"
        deadline = time.monotonic() + 60
        while not self.ca_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # the file is written whole before uvicorn binds; wait for the port
        context = ssl.create_default_context(cafile=str(self.ca_file))
        _wait_for(f"https://127.0.0.1:{self.port}/health", context, self._process)

    def stop(self) -> None:
        if self._process is not None:
            _stop(self._process)
            self._process = None
