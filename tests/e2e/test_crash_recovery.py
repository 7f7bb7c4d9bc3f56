"""kill -9 loses nothing: `imprint serve` is killed (SIGKILL, a real process) after a
re-provisioning committed and before its effects were delivered; after a restart the
superseded certificate is revoked and in the served CRL, the MQTT broker's CRL file is
current again, and a reservation whose request died before signing is resolved. And
killed amid concurrent registrations sharing commit groups, it loses no certificate an
answer carried."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from cryptography import x509
from sqlalchemy import create_engine, select
from sqlalchemy.engine import Engine

from imprint.attestation.symmetric_key import derive_device_key
from imprint.audit import verify_chain
from imprint.pki.records import CertificateRecord, CertificateStatus
from imprint.store.audit import SqlAuditLog
from imprint.store.certificates import SqlCertificateLedger
from imprint.store.tables import certificates, devices, outbox
from tests.conftest import free_port
from tests.e2e.conftest import (
    clean_env,
    start_serve,
    stop,
    symmetric_key_group,
    trusting,
    wait_until,
    wait_until_serving,
)
from tests.integration.test_symmetric_key import make_csr, request_body
from tests.warm_cli import warm_imprint

# The broker's reload command: it logs each call and, while armed, kills the server that
# ran it, as a crash between the commit and the end of its effects would.
_RELOAD = """#!/bin/sh
echo reload >> "$(dirname "$0")/reloads"
if [ -e "$(dirname "$0")/armed" ]; then rm "$(dirname "$0")/armed"; kill -9 "$PPID"; fi
"""


def test_effects_of_a_commit_survive_kill_9(tmp_path: Path) -> None:
    port, data, mqtt_dir = free_port(), tmp_path / "data", tmp_path / "mqtt"
    reload = tmp_path / "reload.sh"
    reload.write_text(_RELOAD)
    reload.chmod(0o755)
    env = clean_env(
        data,
        IMPRINT_SERVER__PORT=str(port),
        IMPRINT_CA__PASSPHRASE="crash-passphrase",
        IMPRINT_MQTT__ENABLED="true",
        IMPRINT_MQTT__DIR=str(mqtt_dir),
        IMPRINT_MQTT__RELOAD_COMMAND=json.dumps([str(reload)]),
        # One process: the reload command kills the process that ran it, which is then
        # the whole server (a worker of several would be replaced by its supervisor).
        IMPRINT_SERVER__WORKERS="1",
    )
    url, ca = f"https://127.0.0.1:{port}", data / "ca" / "root.crt"

    @contextmanager
    def serving(name: str) -> Iterator[subprocess.Popen[str]]:
        process = start_serve(tmp_path, env, tmp_path / f"{name}.log")
        try:
            wait_until_serving(process, url, ca, tmp_path / f"{name}.log")
            yield process
        finally:
            stop(process, signal.SIGTERM, 30)

    with serving("first") as process:
        config = subprocess.run(
            [str(warm_imprint()), "mqtt", "config"], cwd=tmp_path, env=env, capture_output=True,
            text=True, timeout=60, check=False,
        )  # fmt: skip
        assert config.returncode == 0, config.stderr
        token = (data / "admin-token").read_text().strip()
        admin = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, verify=trusting(ca), timeout=30) as client:
            made = client.post("/api/v1/orgs", headers=admin, json={"id": "acme", "name": "Acme"})
            assert made.status_code == 201, made.text
            group = client.post(
                "/api/v1/enrollments",
                headers=admin,
                json={"mechanism": "symmetric-key", "owner": "acme", "id": "crashers"},
            )
            assert group.status_code == 201, group.text
            key = derive_device_key(base64.b64decode(group.json()["group_key"]), "crash-1")
            first = client.post(
                "/api/v1/provision", json=request_body(key, "crash-1", csr=make_csr("crash-1"))
            )
            assert first.status_code == 200, first.text
            old_serial = first.json()["bundle"]["serial"]
            (tmp_path / "armed").touch()
            try:
                client.post(
                    "/api/v1/provision",
                    json=request_body(key, "crash-1", csr=make_csr("crash-1")),
                )
            except httpx.HTTPError:
                pass  # the server died before it answered
            else:
                raise AssertionError("the server answered; the reload command did not kill it")
        process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL

    # What the crash left: the re-provisioning committed (the old certificate revoked with
    # it), the effect's outbox messages undelivered. The crash could as well have come
    # before the broker's CRL file was written: take it away.
    engine = create_engine(f"sqlite:///{data}/imprint.db")
    ledger = SqlCertificateLedger(engine)
    assert ledger.get(old_serial).status is CertificateStatus.REVOKED
    with engine.connect() as conn:
        undelivered = conn.execute(select(outbox).where(outbox.c.done_at.is_(None))).all()
    assert undelivered, "no effect was left undelivered: the kill came too late"
    (mqtt_dir / "crl.pem").unlink()
    # And a request that died between reserving a record and signing it.
    long_ago = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    ledger.reserve(
        CertificateRecord(
            serial="dead0001",
            issuer="ab" * 20,
            profile="device",
            subject="CN=never-signed",
            sans=(),
            status=CertificateStatus.PENDING,
            not_before=long_ago,
            not_after=long_ago + timedelta(days=30),
            requested_by="x509:never-signed",
            created_at=long_ago,
        )
    )
    reloads_before = (tmp_path / "reloads").read_text().count("reload")

    with serving("second"):
        crl_file = mqtt_dir / "crl.pem"
        wait_until(crl_file.exists, "the broker's CRL file to be written again", 30)
        broker_crl = x509.load_pem_x509_crl(crl_file.read_bytes())
        assert broker_crl.get_revoked_certificate_by_serial_number(int(old_serial, 16))
        with httpx.Client(base_url=url, verify=trusting(ca), timeout=30) as client:
            served = x509.load_der_x509_crl(client.get("/crl/issuing.crl").content)
        assert served.get_revoked_certificate_by_serial_number(int(old_serial, 16))
        wait_until(lambda: _undelivered(engine) == 0, "every outbox message to be delivered", 30)
        assert (tmp_path / "reloads").read_text().count("reload") > reloads_before
        assert ledger.get("dead0001").status is CertificateStatus.ABANDONED
    engine.dispose()


def _undelivered(engine: Engine) -> int:
    with engine.connect() as conn:
        return len(conn.execute(select(outbox).where(outbox.c.done_at.is_(None))).all())


def test_kill_9_amid_commit_groups_loses_no_answered_certificate(tmp_path: Path) -> None:
    """The default set-up (SQLite, no broker, no hooks): concurrent registrations share
    commit groups. kill -9 while 24 are in flight: every certificate an answer carried
    is recorded, each device holds one valid certificate, the audit chain holds, and the
    restarted server registers the devices whose requests died."""
    port, data = free_port(), tmp_path / "data"
    env = clean_env(data, IMPRINT_SERVER__PORT=str(port), IMPRINT_CA__PASSPHRASE="crash-pass")
    url, ca = f"https://127.0.0.1:{port}", data / "ca" / "root.crt"

    def serve(name: str) -> subprocess.Popen[str]:
        process = start_serve(tmp_path, env, tmp_path / f"{name}.log")
        wait_until_serving(process, url, ca, tmp_path / f"{name}.log")
        return process

    process = serve("first")
    try:
        token = (data / "admin-token").read_text().strip()
        with httpx.Client(base_url=url, verify=trusting(ca), timeout=30) as client:
            group_key = symmetric_key_group(client, token, "fleet")
        names = [f"dev-{n:03d}" for n in range(240)]
        bodies = {
            name: request_body(derive_device_key(group_key, name), name, csr=make_csr(name))
            for name in names
        }
        answered: dict[str, str] = {}
        lost: list[str] = []

        async def register(client: httpx.AsyncClient, queue: asyncio.Queue[str]) -> None:
            while not queue.empty():
                name = queue.get_nowait()
                try:
                    response = await client.post("/api/v1/provision", json=bodies[name])
                except httpx.HTTPError:
                    lost.append(name)
                    continue
                assert response.status_code == 200, response.text
                answered[name] = response.json()["bundle"]["serial"]
                if len(answered) == 60:
                    process.kill()  # mid-load: other requests are in their groups

        async def load() -> None:
            queue: asyncio.Queue[str] = asyncio.Queue()
            for name in names:
                queue.put_nowait(name)
            limits = httpx.Limits(max_connections=24)
            async with httpx.AsyncClient(
                base_url=url, verify=trusting(ca), timeout=30, limits=limits
            ) as client:
                await asyncio.gather(*(register(client, queue) for _ in range(24)))

        asyncio.run(load())
        process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL
        assert lost, "nothing was in flight when the server died"
    finally:
        stop(process, signal.SIGKILL, 30)

    engine = create_engine(f"sqlite:///{data}/imprint.db")
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(certificates.c.serial, certificates.c.status, devices.c.device_id)
                .join(devices, devices.c.id == certificates.c.device_ref)
                .where(certificates.c.profile == "device")
            ).all()
        recorded = {row.serial: (row.status, row.device_id) for row in rows}
        for name, serial in answered.items():
            assert recorded.get(serial) == ("issued", name), (name, serial)
        valid = [row.device_id for row in rows if row.status == "issued"]
        assert len(valid) == len(set(valid)), "a device holds two valid certificates"
        assert verify_chain(SqlAuditLog(engine)).ok
    finally:
        engine.dispose()

    process = serve("second")
    try:
        with httpx.Client(base_url=url, verify=trusting(ca), timeout=30) as client:
            for name in lost[:5]:
                again = request_body(derive_device_key(group_key, name), name, csr=make_csr(name))
                response = client.post("/api/v1/provision", json=again)
                assert response.status_code == 200, response.text
    finally:
        stop(process, signal.SIGTERM, 30)
