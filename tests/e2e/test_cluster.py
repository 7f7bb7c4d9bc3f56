"""Three stateless nodes on one PostgreSQL behind HAProxy (TLS passthrough), the CA keys in
a SoftHSM2 token: devices register through HAProxy while one node is killed with SIGKILL.

What a user checks: every registration a device got an answer for is recorded once, with
a serial no other certificate has; no device holds two valid certificates (a registration
whose answer was lost to the kill is superseded by the retry); the outbox work the dead
node left is done by the others; the devices saw only errors their retry policy absorbs
(a broken connection, a 502/503 from the proxy), never a wrong answer. And a change on
one node (an enrollment disabled) is seen by another within 100 ms.
"""

from __future__ import annotations

import base64
import os
import shutil
import ssl
import subprocess
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import Engine

from imprint.attestation.symmetric_key import derive_device_key
from imprint.pki.records import CertificateStatus
from imprint.settings import PKCS11_PIN_ENV
from imprint.store.tables import certificates, outbox
from tests.conftest import PostgresServer, _create_database, _drop_database, free_port
from tests.e2e.cluster import Cluster, kill_node, running_cluster
from tests.integration.test_symmetric_key import make_csr, request_body

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.skipif(
        shutil.which("haproxy") is None or not Path("/usr/lib/softhsm/libsofthsm2.so").is_file(),
        reason="needs haproxy and softhsm2 (apt-get install haproxy softhsm2)",
    ),
]

DEVICES = 60  # registrations through HAProxy, by 3 client threads
KILL_AFTER = 10  # acknowledged registrations before the kill
RETRIES = 8


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_server: PostgresServer,
    postgres_template: str,
) -> Any:
    """One cluster for the module: three nodes take a while to start on two cores."""
    tmp_path = tmp_path_factory.mktemp("cluster")
    name = _create_database(postgres_server, template=postgres_template)
    softhsm = tmp_path / "softhsm"
    (softhsm / "tokens").mkdir(parents=True)
    conf = softhsm / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {softhsm / 'tokens'}\nobjectstore.backend = file\n")
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", "cluster", "--so-pin", "so-pin",
         "--pin", "cluster-pin"],
        env={**os.environ, "SOFTHSM2_CONF": str(conf)}, check=True, capture_output=True,
        timeout=30,
    )  # fmt: skip
    ok, failing = tmp_path / "reload-ok.sh", tmp_path / "reload-failing.sh"
    ok.write_text("#!/bin/sh\nexit 0\n")
    failing.write_text("#!/bin/sh\nexit 1\n")
    ok.chmod(0o755)
    failing.chmod(0o755)
    ports = {"n1": free_port(), "n2": free_port(), "n3": free_port()}
    try:
        with running_cluster(
            tmp_path,
            postgres_server.url(name),
            ports,
            free_port(),
            # n1 (the first started, so the outbox leader) cannot reload its broker: what
            # it delivers fails and stays in the outbox until another node takes over.
            per_node={"n1": {"IMPRINT_MQTT__RELOAD_COMMAND": f'["{failing}"]'}},
            SOFTHSM2_CONF=str(conf),
            IMPRINT_CA__PKCS11__LIBRARY="/usr/lib/softhsm/libsofthsm2.so",
            IMPRINT_CA__PKCS11__TOKEN_LABEL="cluster",
            **{PKCS11_PIN_ENV: "cluster-pin"},
            IMPRINT_MQTT__ENABLED="true",
            IMPRINT_MQTT__RELOAD_COMMAND=f'["{ok}"]',
            IMPRINT_LOGGING__LEVEL="warning",
        ) as running:
            for node in running.nodes.values():  # each node keeps its broker's files
                (node.data_dir / "mqtt").mkdir(exist_ok=True)
                (node.data_dir / "mqtt" / "mosquitto.conf").write_text("# test broker\n")
            yield running, postgres_server.url(name)
    finally:
        _drop_database(postgres_server, name)


def _enrollment(cluster: Cluster, enrollment_id: str) -> bytes:
    with cluster.admin() as admin:
        org = admin.post("/api/v1/orgs", json={"id": "acme", "name": "Acme"})
        assert org.status_code in (201, 409), org.text  # the enrollments' owner
        made = admin.post(
            "/api/v1/enrollments",
            json={"mechanism": "symmetric-key", "owner": "acme", "id": enrollment_id},
        )
    assert made.status_code == 201, made.text
    return base64.b64decode(made.json()["group_key"])


class Devices:
    """Client threads registering devices through HAProxy with a retry policy: on a broken
    connection or a 502/503/504 from the proxy, try again (fresh nonce) up to RETRIES times."""

    def __init__(self, cluster: Cluster, group_key: bytes, enrollment_id: str) -> None:
        self._cluster = cluster
        self._group_key = group_key
        self._enrollment = enrollment_id
        self.acknowledged: dict[str, str] = {}  # device -> serial of the answered registration
        self.absorbed: Counter[str] = Counter()
        self.failures: list[str] = []
        self._lock = threading.Lock()

    def register(self, names: list[str]) -> None:
        with self._cluster.client() as client:
            for name in names:
                self._one(client, name)

    def _one(self, client: httpx.Client, name: str) -> None:
        key = derive_device_key(self._group_key, name)
        for _attempt in range(RETRIES):
            body = request_body(key, name, csr=make_csr(name), enrollment_id=self._enrollment)
            try:
                answer = client.post("/api/v1/provision", json=body)
            except httpx.TransportError as exc:
                with self._lock:
                    self.absorbed[exc.__class__.__name__] += 1
                time.sleep(0.2)
                continue
            if answer.status_code in (502, 503, 504):
                with self._lock:
                    self.absorbed[str(answer.status_code)] += 1
                time.sleep(0.2)
                continue
            with self._lock:
                if answer.status_code == 200:
                    self.acknowledged[name] = answer.json()["bundle"]["serial"]
                else:
                    self.failures.append(f"{name}: {answer.status_code} {answer.text[:300]}")
            return
        with self._lock:
            self.failures.append(f"{name}: no answer after {RETRIES} tries")


def _undelivered(engine: Engine) -> set[int]:
    with engine.connect() as conn:
        return set(conn.execute(select(outbox.c.id).where(outbox.c.done_at.is_(None))).scalars())


def test_a_node_killed_mid_load_loses_nothing(cluster: Any, tmp_path: Path) -> None:
    running, database_url = cluster
    group_key = _enrollment(running, "fleet")
    devices = Devices(running, group_key, "fleet")
    names = [f"dev-{i:03d}" for i in range(DEVICES)]
    threads = [
        threading.Thread(target=devices.register, args=(names[i::3],), daemon=True)
        for i in range(3)
    ]
    engine = create_engine(database_url)
    try:
        n1 = running.nodes["n1"]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while len(devices.acknowledged) < KILL_AFTER and time.monotonic() < deadline:
            time.sleep(0.05)
        kill_node(n1)
        killed_at = time.monotonic()
        left = _undelivered(engine)
        assert left, "the killed node left no outbox work behind"
        for thread in threads:
            thread.join(timeout=120)
        assert not any(t.is_alive() for t in threads), "the clients did not finish"

        assert devices.failures == [], devices.failures
        assert len(devices.acknowledged) == DEVICES
        unexpected = set(devices.absorbed) - {
            "ConnectError", "ReadError", "RemoteProtocolError", "WriteError", "502", "503", "504",
        }  # fmt: skip
        assert not unexpected, devices.absorbed

        with engine.connect() as conn:
            rows = conn.execute(
                select(certificates.c.serial, certificates.c.subject, certificates.c.status).where(
                    certificates.c.profile == "device"
                )
            ).all()
        serials = [row.serial for row in rows]
        assert len(serials) == len(set(serials))
        acknowledged = set(devices.acknowledged.values())
        assert len(acknowledged) == DEVICES, "two devices were answered with one serial"
        by_serial = {row.serial: row for row in rows}
        for name, serial in devices.acknowledged.items():
            assert by_serial[serial].status == CertificateStatus.ISSUED.value, name
        valid = Counter(row.subject for row in rows if row.status == CertificateStatus.ISSUED.value)
        assert all(count == 1 for count in valid.values()), "a device holds two certificates"
        assert sum(valid.values()) == DEVICES
        superseded = [row for row in rows if row.serial not in acknowledged]
        assert all(row.status != CertificateStatus.ISSUED.value for row in superseded)

        # The outbox: what the dead node left is delivered by the others, each message
        # once its retry is due (n1 failed it with backoff: 2, 4, 8 ... s).
        with engine.connect() as conn:
            last_due = conn.execute(
                select(func.max(outbox.c.due_at)).where(outbox.c.done_at.is_(None))
            ).scalar_one()
        wait = 20.0 if last_due is None else (last_due - datetime.now(UTC)).total_seconds() + 20
        assert wait < 150, f"a retry is due {wait:.0f} s from now: the kill came too late"
        deadline = time.monotonic() + wait
        while _undelivered(engine) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _undelivered(engine), f"{len(left)} messages were left undelivered"
        with engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(outbox)).scalar_one()
        assert total >= DEVICES
        took = time.monotonic() - killed_at
        print(f"\nkilled at {killed_at - started:.1f} s, outbox drained {took:.1f} s after")
        print(f"errors absorbed by retries: {dict(devices.absorbed)}")

        # Mutual TLS reaches imprint through the proxy: a device renews with its
        # certificate in the handshake.
        _renew_over_mutual_tls(running, tmp_path, group_key)
    finally:
        engine.dispose()


def _renew_over_mutual_tls(cluster: Cluster, tmp_path: Path, group_key: bytes) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mtls-1")]))
        .sign(key, hashes.SHA256())
    )
    pem = csr.public_bytes(serialization.Encoding.PEM).decode()
    device_key = derive_device_key(group_key, "mtls-1")
    with cluster.client() as client:
        first = client.post(
            "/api/v1/provision",
            json=request_body(device_key, "mtls-1", csr=(pem, csr), enrollment_id="fleet"),
        )
    assert first.status_code == 200, first.text
    chain, key_file = tmp_path / "mtls.pem", tmp_path / "mtls.key"
    chain.write_text(first.json()["bundle"]["certificate_chain"])
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(cafile=str(cluster.root))
    context.load_cert_chain(str(chain), str(key_file))
    new_csr = make_csr("mtls-1")[0]
    with httpx.Client(base_url=cluster.url, verify=context, timeout=30) as client:
        renewed = client.post("/api/v1/renew", json={"csr": new_csr})
    assert renewed.status_code == 200, renewed.text
    with cluster.client() as anonymous:  # the same request without a certificate
        refused = anonymous.post("/api/v1/renew", json={"csr": new_csr})
    assert refused.status_code == 400, refused.text
    assert refused.json()["code"] == "evidence_missing"


def test_a_disabled_enrollment_is_refused_by_another_node_within_100_ms(cluster: Any) -> None:
    running, _database_url = cluster
    a, b = running.nodes["n2"], running.nodes["n3"]  # n1 may have been killed
    enrollment = f"coherent-{uuid.uuid4().hex[:6]}"
    group_key = _enrollment(running, enrollment)

    def provision_on_b(name: str) -> httpx.Response:
        key = derive_device_key(group_key, name)
        with running.client(b.url) as client:
            return client.post(
                "/api/v1/provision",
                json=request_body(key, name, csr=make_csr(name), enrollment_id=enrollment),
            )

    # B has the enrollment in its cache now (read a moment ago, kept for seconds).
    assert provision_on_b("before").status_code == 200
    with running.admin(a.url) as admin:
        disabled = admin.post(f"/api/v1/enrollments/{enrollment}/disable")
        assert disabled.status_code == 200, disabled.text
        seen_at = time.monotonic()
    time.sleep(max(0.0, 0.1 - (time.monotonic() - seen_at)))
    refused = provision_on_b("after")
    assert refused.status_code == 403, refused.text
    assert refused.json()["code"] == "enrollment_closed"
