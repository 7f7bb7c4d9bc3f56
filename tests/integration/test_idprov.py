"""The idprov compatibility routes over real HTTPS, with a device written here the way
idprov's Go client works: its request is ``json.Marshal`` of a Go struct (compact,
field order, ``<``, ``>`` and ``&`` escaped), signed with HMAC-SHA256 keyed with the
raw OOB secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from imprint.audit import AuditQuery
from imprint.pki.records import CertificateStatus
from imprint.settings import Settings
from tests.integration.conftest import Service, ensure_org, start_service, write_credentials

SECRET = "12345678"
DEVICE = "AA:BB:CC:DD:EE:FF"
BAD_PEM = "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n"
SERVICES = {"mqtt": "mqtts://broker.example:8883", "directory": "https://dir.example/<td>"}


def go_marshal(fields: list[tuple[str, Any]]) -> bytes:
    """Go's json.Marshal of a struct with string and uint fields (enough for idprov)."""
    text = json.dumps(dict(fields), separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    return text.encode()


def sign(message: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


class Device:
    """An idprov device: an EC key pair and the messages idprov's client sends."""

    def __init__(self, device_id: str = DEVICE) -> None:
        self.device_id = device_id
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.public_key_pem = (
            self.key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def request(self, secret: str, ip: str = "192.0.2.7") -> bytes:
        fields: list[tuple[str, Any]] = [
            ("deviceID", self.device_id),
            ("ip", ip),
            ("mac", ""),
            ("publicKeyPEM", self.public_key_pem),
            ("signature", ""),
        ]
        fields[-1] = ("signature", sign(go_marshal(fields), secret))
        return go_marshal(fields)


def response_fields(body: dict[str, Any]) -> list[tuple[str, Any]]:
    """idprov's PostProvisionResponseMessage, as the Go client decodes it."""
    fields: list[tuple[str, Any]] = []
    if body.get("retrySec"):
        fields.append(("retrySec", body["retrySec"]))
    return [*fields, *((name, body.get(name, "")) for name in ("status", "caCert", "clientCert"))]


def post(service: Service, body: bytes) -> httpx.Response:
    with service.client() as client:
        return client.post(
            "/idprov/provreq", content=body, headers={"content-type": "application/json"}
        )


def register(admin: httpx.Client, device_id: str = DEVICE, **params: str) -> httpx.Response:
    return admin.post(
        "/idprov/oobsecret",
        params=params,
        json={"deviceID": device_id, "oobSecret": SECRET, "validUntil": ""},
    )


def state(service: Service) -> tuple[int, int]:
    runtime = service.runtime
    return len(runtime.devices.search(limit=10_000)), len(runtime.ledger.search(limit=10_000))


@pytest.fixture
def idprov_service(settings: Settings, tmp_path: Path) -> Iterator[Service]:
    """imprint with services configured and one oob-secret enrollment."""
    configured = settings.model_copy(update={"services": SERVICES})
    for service in start_service(configured, tmp_path):
        with service.admin() as admin:
            ensure_org(admin, "hub")
            created = admin.post(
                "/api/v1/enrollments",
                json={"mechanism": "oob-secret", "owner": "hub", "id": "idprov"},
            )
            assert created.status_code == 201, created.text
        yield service


def test_directory_lists_endpoints_ca_and_services(idprov_service: Service) -> None:
    with idprov_service.client() as client:
        response = client.get("/idprov/directory")
    assert response.status_code == 200
    body = response.json()
    assert body["endpoints"] == {
        "directory": "/idprov/directory",
        "status": "/idprov/status/{deviceID}",
        "postOobSecret": "/idprov/oobsecret",
        "postProvisionRequest": "/idprov/provreq",
    }
    assert body["version"] == "1"
    assert body["services"] == SERVICES
    # caCert is a Go []byte: base64 of the root certificate's PEM.
    root = x509.load_pem_x509_certificate(base64.b64decode(body["caCert"]))
    assert root == idprov_service.runtime.authority.material.root
    # Go-encoded: compact, map keys sorted, '<' and '>' escaped.
    assert b'"services":{"directory":"https://dir.example/\\u003ctd\\u003e","mqtt"' in (
        response.content
    )


@pytest.mark.both_databases
def test_signed_request_is_approved_with_a_certificate_openssl_accepts(
    idprov_service: Service, tmp_path: Path
) -> None:
    service = idprov_service
    device = Device()
    with service.admin() as admin:
        registered = register(admin)
    assert registered.status_code == 200, registered.text
    assert registered.json()["result"] == "created"
    assert SECRET not in registered.text
    response = post(service, device.request(SECRET))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "Approved"
    assert 0 < body["retrySec"] <= 90 * 86400
    # The body is exactly what Go would marshal, and signed with the same secret.
    unsigned = response_fields(body)
    assert response.content == go_marshal([*unsigned, ("signature", body["signature"])])
    assert body["signature"] == sign(go_marshal([*unsigned, ("signature", "")]), SECRET)
    leaf_pem, *intermediates = x509.load_pem_x509_certificates(body["clientCert"].encode())
    assert leaf_pem.subject.rfc4514_string() == f"CN={DEVICE},OU=hub"
    assert leaf_pem.public_key() == device.key.public_key()
    (tmp_path / "root.pem").write_text(body["caCert"])
    (tmp_path / "leaf.pem").write_bytes(leaf_pem.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "chain.pem").write_bytes(
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in intermediates)
    )
    verified = subprocess.run(
        ["openssl", "verify", "-CAfile", "root.pem", "-untrusted", "chain.pem", "leaf.pem"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.strip().endswith("OK")
    # The secret is spent: another key is rejected; the same request gets the same cert.
    assert post(service, Device().request(SECRET)).json()["code"] == "secret_used"
    same = post(service, device.request(SECRET)).json()
    assert same["status"] == "Approved"
    assert same["clientCert"] == body["clientCert"]


def test_escaped_characters_are_signed_as_go_writes_them(idprov_service: Service) -> None:
    device = Device("lab<1>&co")
    with idprov_service.admin() as admin:
        assert register(admin, device.device_id).status_code == 200
    request = device.request(SECRET)
    assert b"lab\\u003c1\\u003e\\u0026co" in request
    response = post(idprov_service, request)
    assert response.json()["status"] == "Approved", response.text


def test_unknown_device_waits_and_nothing_is_created(idprov_service: Service) -> None:
    before = state(idprov_service)
    response = post(idprov_service, Device("never-registered").request(SECRET))
    assert response.status_code == 200
    assert response.headers["retry-after"] == "30"
    assert response.content == (
        b'{"retrySec":30,"status":"Waiting","caCert":"","clientCert":"","signature":""}'
    )
    assert state(idprov_service) == before


@pytest.mark.parametrize("case", ["wrong-secret", "tampered-ip", "unsigned"])
def test_bad_signatures_are_rejected_and_nothing_is_created(
    idprov_service: Service, case: str
) -> None:
    device = Device()
    with idprov_service.admin() as admin:
        register(admin)
    body = device.request("not-the-secret" if case == "wrong-secret" else SECRET)
    if case == "tampered-ip":
        body = body.replace(b"192.0.2.7", b"192.0.2.8")
    if case == "unsigned":
        message = json.loads(body)
        message["signature"] = ""
        body = json.dumps(message).encode()
    before = state(idprov_service)
    response = post(idprov_service, body)
    assert response.status_code == 200
    rejected = response.json()
    assert rejected["status"] == "Rejected"
    assert rejected["code"] == "signature_invalid"
    assert rejected["signature"] == ""
    assert SECRET not in response.text
    assert state(idprov_service) == before


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"ip": ""}, "evidence_missing"),
        ({"deviceID": ""}, "evidence_missing"),
        ({"publicKeyPEM": BAD_PEM}, "value_invalid"),
        ({"deviceID": 42}, "request_invalid"),
    ],
)  # fmt: skip
def test_malformed_requests_are_bad_requests(
    idprov_service: Service, change: dict[str, Any], code: str
) -> None:
    message = {**json.loads(Device().request(SECRET)), **change}
    before = state(idprov_service)
    response = post(idprov_service, json.dumps(message).encode())
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code
    assert state(idprov_service) == before


def test_status_for_the_admin_and_for_the_device_itself(
    idprov_service: Service, tmp_path: Path
) -> None:
    service = idprov_service
    device = Device()
    path = f"/idprov/status/{quote(DEVICE)}"
    with service.admin() as admin:
        waiting = admin.get(path)
        register(admin)
    assert waiting.status_code == 200, waiting.text
    assert waiting.json()["status"] == "Waiting"
    assert waiting.json()["clientCert"] is None
    approved = post(service, device.request(SECRET)).json()
    with service.admin() as admin:
        status = admin.get(path)
    body = status.json()
    assert (body["deviceID"], body["status"]) == (DEVICE, "Approved")
    # clientCert is a Go []byte: base64 of the PEM chain.
    assert base64.b64decode(body["clientCert"]).decode() == approved["clientCert"]
    assert body["caCert"] == approved["caCert"]
    # The device may ask with its own certificate; nobody else without the admin key.
    own = write_credentials(tmp_path, "device", approved["clientCert"], device.key)
    with service.client(cert=own) as client:
        mine = client.get(path)
    other = service.device_credentials("someone-else")
    with service.client(cert=other) as client:
        foreign = client.get(path)
    with service.client() as client:
        anonymous = client.get(path)
    assert mine.status_code == 200, mine.text
    assert mine.json()["status"] == "Approved"
    assert foreign.status_code == 403
    assert anonymous.status_code == 401


def test_oob_secret_registration_needs_an_admin_and_one_enrollment(
    idprov_service: Service,
) -> None:
    service = idprov_service
    with service.client() as client:
        anonymous = register(client)
    assert anonymous.status_code == 401
    with service.admin() as admin:
        admin.post(
            "/api/v1/enrollments",
            json={"mechanism": "oob-secret", "owner": "hub", "id": "second"},
        )
        ambiguous = register(admin)
        named = register(admin, enrollment_id="second")
        short = admin.post(
            "/idprov/oobsecret",
            params={"enrollment_id": "second"},
            json={"deviceID": "x", "oobSecret": "1234"},
        )
    assert ambiguous.status_code == 400
    assert ambiguous.json()["code"] == "enrollment_ambiguous"
    assert named.status_code == 200, named.text
    assert named.json()["enrollmentID"] == "second"
    assert short.status_code == 400
    assert short.json()["code"] == "value_invalid"


@pytest.mark.both_databases
@pytest.mark.slow
def test_a_provisioned_device_renews_over_mutual_tls_and_its_old_certificate_is_revoked(
    idprov_service: Service,
) -> None:
    service = idprov_service
    device = Device()
    with service.admin() as admin:
        assert register(admin).status_code == 200
    first = post(service, device.request(SECRET)).json()
    assert first["status"] == "Approved"
    cert, key = write_credentials(service.workdir, "idprov-device", first["clientCert"], device.key)
    old_serial = format(
        x509.load_pem_x509_certificates(first["clientCert"].encode())[0].serial_number, "x"
    )
    # What idprov's client sends when it holds a certificate: the same request, over mTLS,
    # signed with whatever secret it was given (here none); the server needs no secret.
    with service.client(cert=(cert, key)) as mtls:
        renewed = mtls.post(
            "/idprov/provreq",
            content=device.request(""),
            headers={"content-type": "application/json"},
        )
    assert renewed.status_code == 200, renewed.text
    body = renewed.json()
    assert body["status"] == "Approved", body
    unsigned = response_fields(body)
    assert renewed.content == go_marshal([*unsigned, ("signature", body["signature"])])
    # idprov's client verifies a renewal's answer with the empty secret.
    assert body["signature"] == sign(go_marshal([*unsigned, ("signature", "")]), "")
    leaf = x509.load_pem_x509_certificates(body["clientCert"].encode())[0]
    new_serial = format(leaf.serial_number, "x")
    assert new_serial != old_serial
    assert leaf.subject.rfc4514_string() == f"CN={DEVICE},OU=hub"
    assert leaf.public_key() == device.key.public_key()
    assert service.runtime.ledger.get(old_serial).status is CertificateStatus.REVOKED
    assert service.runtime.ledger.get(old_serial).revocation_reason == "superseded"
    assert service.runtime.ledger.get(new_serial).status is CertificateStatus.ISSUED
    (stored,) = service.runtime.devices.search(limit=10)
    assert stored.certificate_serial == new_serial
    renewals = service.runtime.audit.search(AuditQuery(action="device.renew"))
    assert [e.details["superseded"] for e in renewals] == [old_serial]

    # The old certificate renews nothing any more (its TLS handshake still completes
    # for the application to answer, as idprov expects: 200 with Rejected).
    with service.client(cert=(cert, key)) as stale:
        again = stale.post(
            "/idprov/provreq",
            content=device.request(""),
            headers={"content-type": "application/json"},
        )
    assert again.json()["status"] == "Rejected"
    assert again.json()["code"] == "certificate_revoked"
    # A device renews only its own certificate.
    new_cert, new_key = write_credentials(
        service.workdir, "idprov-renewed", body["clientCert"], device.key
    )
    other = Device("someone-else")
    with service.client(cert=(new_cert, new_key)) as mtls:
        crossed = mtls.post(
            "/idprov/provreq",
            content=other.request(""),
            headers={"content-type": "application/json"},
        )
        status = mtls.get(f"/idprov/status/{quote(DEVICE)}")
    assert crossed.json()["status"] == "Rejected"
    assert crossed.json()["code"] == "device_id_mismatch"
    assert status.json()["status"] == "Approved"
    assert (
        base64.b64decode(status.json()["clientCert"])
        .decode()
        .startswith(body["clientCert"].split("-----END CERTIFICATE-----")[0])
    )
