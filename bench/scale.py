"""Scale: seed many provisioned devices straight into the database, and time a bulk
import of out-of-band secrets through ``imprint oob import``.

Seeding uses the database's own bulk path, one ``INSERT ... SELECT`` over a generated
series per table (a recursive CTE on SQLite, ``generate_series`` on PostgreSQL), so a
million devices take seconds instead of the hours a million registrations would. Each
seeded device gets what a real registration leaves behind: its device row, its
certificate record (with a DER-sized blob) and four provisioning step records, with
random keys where the server's keys are random (ids, serials, fingerprints).
"""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.servers import ImprintServer, libpq_url

_STEPS = ("attest", "policy", "issue", "bundle")
_SQLITE_TIME = "2025-01-01 00:00:00.000000"
_SQLITE_LATER = "2025-04-01 00:00:00.000000"

_SQLITE_SEED = """
WITH RECURSIVE n(i) AS (SELECT :first UNION ALL SELECT i + 1 FROM n WHERE i < :last)
INSERT INTO {table} ({columns}) SELECT {values} FROM n
"""


def _sqlite_statements(enrollment_id: str, issuer: str) -> list[tuple[str, str, str]]:
    t, later = f"'{_SQLITE_TIME}'", f"'{_SQLITE_LATER}'"
    return [
        (
            "devices",
            "id, owner, device_id, enrollment_id, mechanism, status, certificate_serial,"
            " pinned_fingerprint, public_key_sha256, created_at, updated_at, provisioned_at",
            "lower(hex(randomblob(16))), 'bench', 'seed-' || i, "
            f"'{enrollment_id}', 'x509', 'provisioned', lower(hex(randomblob(16))),"
            f" lower(hex(randomblob(32))), lower(hex(randomblob(32))), {t}, {t}, {t}",
        ),
        (
            "certificates",
            "serial, issuer, profile, subject, sans, status, not_before, not_after,"
            " requested_by, created_at, issued_at, fingerprint_sha256, der",
            f"lower(hex(randomblob(16))), '{issuer}', 'device', 'CN=seed-' || i || ',OU=bench',"
            f" '[]', 'issued', {t}, {later}, 'x509:' || lower(hex(randomblob(32))), {t}, {t},"
            " lower(hex(randomblob(32))), randomblob(480)",
        ),
        *(
            (
                "provisioning_records",
                "id, request_id, device_ref, enrollment_id, mechanism, registration_id,"
                " step, status, source, at",
                "lower(hex(randomblob(16))), lower(hex(randomblob(16))),"
                f" lower(hex(randomblob(16))), '{enrollment_id}', 'x509', 'seed-' || i,"
                f" '{step}', 'ok', '127.0.0.1', {t}",
            )
            for step in _STEPS
        ),
    ]


def _postgres_statements(enrollment_id: str, issuer: str) -> list[str]:
    rand16 = "substr(md5(random()::text || i::text), 1, 32)"
    rand32 = "md5(random()::text) || md5(random()::text)"
    series = "FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS i"
    statements = [
        "INSERT INTO devices (id, owner, device_id, enrollment_id, mechanism, status,"
        " certificate_serial, pinned_fingerprint, public_key_sha256, created_at, updated_at,"
        f" provisioned_at) SELECT gen_random_uuid()::text, 'bench', 'seed-' || i,"
        f" '{enrollment_id}', 'x509', 'provisioned', {rand16}, {rand32}, {rand32},"
        f" now(), now(), now() {series}",
        "INSERT INTO certificates (serial, issuer, profile, subject, sans, status, not_before,"
        " not_after, requested_by, created_at, issued_at, fingerprint_sha256, der)"
        f" SELECT {rand16}, '{issuer}', 'device', 'CN=seed-' || i || ',OU=bench', '[]',"
        f" 'issued', now(), now() + interval '90 days', 'x509:' || {rand32}, now(), now(),"
        f" {rand32}, convert_to(repeat(md5(i::text), 15), 'UTF8') {series}",
    ]
    for step in _STEPS:
        statements.append(
            "INSERT INTO provisioning_records (id, request_id, device_ref, enrollment_id,"
            " mechanism, registration_id, step, status, source, at)"
            f" SELECT gen_random_uuid()::text, {rand16}, {rand16}, '{enrollment_id}', 'x509',"
            f" 'seed-' || i, '{step}', 'ok', '127.0.0.1', now() {series}"
        )
    return statements


def device_count(server: ImprintServer) -> int:
    return int(_query(server, "SELECT count(*) FROM devices"))


def _query(server: ImprintServer, sql: str) -> Any:
    if server.database_url.startswith("sqlite"):
        with sqlite3.connect(server.database_url.removeprefix("sqlite:///")) as conn:
            return conn.execute(sql).fetchone()[0]
    import psycopg

    url = libpq_url(server.database_url)
    with psycopg.connect(url) as conn:
        row = conn.execute(sql).fetchone()
        assert row is not None
        return row[0]


def seed_devices(
    server: ImprintServer, first: int, last: int, enrollment_id: str, issuer: str
) -> float:
    """Insert devices ``seed-<first>`` to ``seed-<last>`` with their records; seconds taken."""
    start = time.monotonic()
    chunk = 250_000
    for low in range(first, last + 1, chunk):
        high = min(last, low + chunk - 1)
        if server.database_url.startswith("sqlite"):
            path = server.database_url.removeprefix("sqlite:///")
            with sqlite3.connect(path, timeout=60) as conn:
                for table, columns, values in _sqlite_statements(enrollment_id, issuer):
                    sql = _SQLITE_SEED.format(table=table, columns=columns, values=values)
                    conn.execute(sql, {"first": low, "last": high})
        else:
            import psycopg

            url = libpq_url(server.database_url)
            with psycopg.connect(url) as conn:
                for statement in _postgres_statements(enrollment_id, issuer):
                    conn.execute(statement, {"first": low, "last": high})
    if not server.database_url.startswith("sqlite"):
        import psycopg

        url = libpq_url(server.database_url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
    return time.monotonic() - start


def import_secrets(server: ImprintServer, enrollment_id: str, rows: int) -> dict[str, Any]:
    """``imprint oob import`` of ``rows`` new secrets: wall time and the CLI's peak RSS."""
    csv_file = server.workdir / f"secrets-{rows}.csv"
    with csv_file.open("w") as out:
        out.write("device_id,secret\n")
        for index in range(rows):
            out.write(f"bulk-{index:07d},label-secret-{index:07d}\n")
    command = ["/usr/bin/time", "-f", "%e %M", str(Path(server.cli_path)), "oob", "import"]
    start = time.monotonic()
    result = subprocess.run(
        [*command, enrollment_id, str(csv_file)],
        cwd=server.workdir,
        env=server.environment(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    wall = time.monotonic() - start
    csv_file.unlink()
    last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
    try:
        peak_kb = int(last.split()[1])
    except (IndexError, ValueError):
        peak_kb = 0
    return {
        "rows": rows,
        "ok": result.returncode == 0,
        "output": result.stdout.strip()[-300:] or result.stderr.strip()[-300:],
        "seconds": round(wall, 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),
    }
