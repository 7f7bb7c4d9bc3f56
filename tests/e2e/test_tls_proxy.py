"""A real HAProxy terminating TLS in front of a real ``imprint serve`` (``tls: false``),
with the front end docs/configuration.md gives: HAProxy verifies the client's
certificate (an expired one is imprint's to judge) and forwards it in ``X-Client-Cert``
as base64 DER (``%[ssl_c_der,base64]``), and imprint takes the header only from the
proxy's address (``server.trusted_proxies``)."""

from __future__ import annotations

import base64
import shutil
import signal
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID

from tests.conftest import free_port
from tests.docs.pages import fenced_blocks
from tests.e2e.conftest import clean_env, start_serve, stop, wait_until, wait_until_serving
from tests.integration.test_x509_attestation import Manufacturer

pytestmark = pytest.mark.skipif(
    shutil.which("haproxy") is None, reason="needs haproxy (apt-get install haproxy)"
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

# The test's own lines around the front end and back end that docs/configuration.md
# gives: that block is what runs, with this test's files and ports in place of its.
HAPROXY_GLOBAL = """\
global
    maxconn 200
defaults
    timeout connect 2s
    timeout client 30s
    timeout server 30s
"""


def haproxy_config(port: int, crt: Path, clients: Path, backend: int) -> str:
    """docs/configuration.md's HAProxy block, on this test's ports and files."""
    blocks = [b for b in fenced_blocks(DOCS.read_text()) if b.language == "haproxy"]
    assert len(blocks) == 1, "docs/configuration.md has one HAProxy block"
    text = "\n".join(blocks[0].lines) + "\n"
    for theirs, ours in (
        ("127.0.0.1:8443", f"127.0.0.1:{port}"),
        ("/etc/haproxy/proxy.pem", str(crt)),
        ("/etc/haproxy/clients.pem", str(clients)),
        ("127.0.0.1:8080", f"127.0.0.1:{backend}"),
    ):
        assert text.count(theirs) == 1, f"the docs' block names {theirs} once"
        text = text.replace(theirs, ours)
    return HAPROXY_GLOBAL + text


@dataclass
class Proxied:
    url: str  # HAProxy's https address
    direct: str  # imprint's own plain-HTTP address
    root: Path
    token: str
    workdir: Path


def _key_and_csr(name: str) -> tuple[ec.EllipticCurvePrivateKey, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    )
    csr = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()
    return key, csr


def _key_pem(key: PrivateKeyTypes) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def acme() -> Manufacturer:
    return Manufacturer.create("Acme")


@pytest.fixture
def proxied(tmp_path: Path, acme: Manufacturer) -> Iterator[Proxied]:
    backend, front = free_port(), free_port()
    log = tmp_path / "serve.log"
    env = clean_env(
        tmp_path / "data",
        IMPRINT_SERVER__PORT=str(backend),
        IMPRINT_SERVER__TLS="false",
        IMPRINT_SERVER__PUBLIC_URL=f"https://127.0.0.1:{front}",
        IMPRINT_SERVER__TRUSTED_PROXIES='["127.0.0.1"]',
        IMPRINT_CA__PASSPHRASE="proxy-passphrase",
    )
    server = start_serve(tmp_path, env, log)
    haproxy: subprocess.Popen[str] | None = None
    direct = f"http://127.0.0.1:{backend}"
    root = tmp_path / "data" / "ca" / "root.crt"
    try:
        wait_until_serving(server, direct, root, log, 90)
        token = (tmp_path / "data" / "admin-token").read_text().strip()
        admin = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=direct, headers=admin, timeout=30) as client:
            # The proxy's own certificate comes from imprint, as the docs suggest.
            key, csr = _key_and_csr("proxy")
            issued = client.post(
                "/api/v1/certificates",
                json={"csr": csr, "profile": "server", "sans": ["127.0.0.1"]},
            )
            assert issued.status_code == 201, issued.text
            made = client.post("/api/v1/orgs", json={"id": "acme", "name": "Acme"})
            assert made.status_code == 201, made.text
            enrollment = {
                "mechanism": "x509", "owner": "acme",
                "x509": {"certificate_chain": acme.chain(), "accept_expired": True},
            }  # fmt: skip
            enrolled = client.post("/api/v1/enrollments", json=enrollment)
            assert enrolled.status_code == 201, enrolled.text
        crt = tmp_path / "proxy.pem"
        crt.write_text(issued.json()["chain"] + _key_pem(key))
        # Whom HAProxy lets present a certificate: imprint's CA and the manufacturer's.
        clients = tmp_path / "clients.pem"
        clients.write_text((tmp_path / "data" / "ca" / "chain.crt").read_text() + _pem(acme.root))
        config = tmp_path / "haproxy.cfg"
        config.write_text(haproxy_config(front, crt, clients, backend))
        with (tmp_path / "haproxy.log").open("w") as out:
            haproxy = subprocess.Popen(
                ["haproxy", "-db", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT,
                text=True,
            )  # fmt: skip
        wait_until(lambda: haproxy.poll() is None and _answers(front), "HAProxy", 30)
        yield Proxied(f"https://127.0.0.1:{front}", direct, root, token, tmp_path)
    finally:
        if haproxy is not None:
            stop(haproxy, signal.SIGTERM, 10)
        stop(server, signal.SIGTERM, 30)


def _client(proxied: Proxied, chain: str | None = None, key: str | None = None) -> httpx.Client:
    """An HTTPS client of HAProxy, trusting imprint's root; with ``chain`` and ``key``
    (PEM), it presents them in the handshake."""
    context = ssl.create_default_context(cafile=str(proxied.root))
    if chain is not None and key is not None:
        (proxied.workdir / "client.pem").write_text(chain)
        (proxied.workdir / "client-key.pem").write_text(key)
        context.load_cert_chain(proxied.workdir / "client.pem", proxied.workdir / "client-key.pem")
    return httpx.Client(base_url=proxied.url, verify=context, timeout=30)


def test_a_device_registers_with_its_manufacturer_certificate_through_haproxy(
    proxied: Proxied, acme: Manufacturer
) -> None:
    leaf, leaf_key = acme.line.idevid("meter-42")
    _key, csr = _key_and_csr("ignored")
    factory = _pem(leaf) + _pem(acme.line.certificate)
    with _client(proxied, factory, _key_pem(leaf_key)) as device:
        response = device.post("/api/v1/provision", json={"mechanism": "x509", "csr": csr})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["device_id"] == "meter-42"
    issued = x509.load_pem_x509_certificate(body["bundle"]["certificate"].encode())
    assert issued.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "meter-42"
    # Its CRL's address is the proxy's, where devices reach imprint (server.public_url).
    points = issued.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert points[0].full_name[0].value.startswith(proxied.url + "/")


def test_an_expired_manufacturer_certificate_its_enrollment_accepts_gets_through(
    proxied: Proxied, acme: Manufacturer
) -> None:
    now = datetime.now(UTC)
    leaf, leaf_key = acme.line.idevid(
        "meter-old", valid=(now - timedelta(days=900), now - timedelta(days=5))
    )
    _key, csr = _key_and_csr("ignored")
    factory = _pem(leaf) + _pem(acme.line.certificate)
    with _client(proxied, factory, _key_pem(leaf_key)) as device:
        response = device.post("/api/v1/provision", json={"mechanism": "x509", "csr": csr})
    assert response.status_code == 200, response.text
    assert response.json()["device_id"] == "meter-old"


def test_an_issued_certificate_is_an_identity_through_haproxy(proxied: Proxied) -> None:
    key, csr = _key_and_csr("sensor-7")
    admin = {"Authorization": f"Bearer {proxied.token}"}
    with httpx.Client(base_url=proxied.direct, headers=admin, timeout=30) as client:
        issued = client.post("/api/v1/certificates", json={"csr": csr})
    assert issued.status_code == 201, issued.text
    with _client(proxied, issued.json()["chain"], _key_pem(key)) as sensor:
        seen = sensor.get("/api/v1/whoami").json()["client_certificate"]
    assert seen["subject"] == "CN=sensor-7"
    assert seen["source"] == "proxy"
    assert seen["serial"] == issued.json()["serial"]


def test_a_client_cannot_send_its_own_certificate_header_through_haproxy(
    proxied: Proxied,
) -> None:
    _key, csr = _key_and_csr("someone-else")
    admin = {"Authorization": f"Bearer {proxied.token}"}
    with httpx.Client(base_url=proxied.direct, headers=admin, timeout=30) as client:
        issued = client.post("/api/v1/certificates", json={"csr": csr})
    assert issued.status_code == 201, issued.text
    der = x509.load_pem_x509_certificate(issued.json()["certificate"].encode()).public_bytes(
        serialization.Encoding.DER
    )
    smuggled = {"X-Client-Cert": base64.b64encode(der).decode()}
    with _client(proxied) as anonymous:
        seen = anonymous.get("/api/v1/whoami", headers=smuggled).json()
    assert seen["client_certificate"] is None  # HAProxy dropped the header
    with _client(proxied) as anonymous:
        refused = anonymous.post("/api/v1/renew", json={"csr": csr}, headers=smuggled)
    assert refused.status_code == 400, refused.text
    assert refused.json()["code"] == "evidence_missing"  # no certificate was seen


@pytest.mark.parametrize("who", ["foreign-manufacturer", "self-signed"])
def test_a_certificate_haproxy_does_not_know_never_reaches_imprint(
    proxied: Proxied, who: str
) -> None:
    """HAProxy ends the handshake (docs/configuration.md says so of its front end): a
    chain to a root not in clients.pem, and a leaf that is its own issuer."""
    stranger = Manufacturer.create("Globex")
    if who == "self-signed":  # its root: its own issuer
        chain, key = _pem(stranger.root), stranger.root_key
    else:
        leaf, key = stranger.line.idevid("intruder-1")
        chain = _pem(leaf) + _pem(stranger.line.certificate)
    with (
        pytest.raises(httpx.TransportError, match="unknown ca"),  # HAProxy's TLS alert
        _client(proxied, chain, _key_pem(key)) as device,
    ):
        device.get("/api/v1/whoami")
