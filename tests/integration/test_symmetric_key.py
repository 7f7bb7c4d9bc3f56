"""Symmetric-key attestation over real HTTPS: group and individual keys, and every refusal."""

from __future__ import annotations

import base64
import secrets
import time
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from imprint.attestation.symmetric_key import csr_sha256, derive_device_key, symmetric_key_token
from tests.integration.conftest import Service, with_orgs


@pytest.fixture
def service(service: Service) -> Service:
    """The server, with the organizations this module's enrollments name."""
    return with_orgs(service, "acme")


PROBLEM = "application/problem+json"


def make_csr(name: str = "ignored") -> tuple[str, x509.CertificateSigningRequest]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode(), csr


def create_enrollment(client: httpx.Client, **fields: Any) -> dict[str, Any]:
    response = client.post(
        "/api/v1/enrollments", json={"mechanism": "symmetric-key", "owner": "acme", **fields}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def request_body(
    device_key: bytes,
    device_id: str,
    *,
    csr: tuple[str, x509.CertificateSigningRequest] | None = None,
    token_csr: x509.CertificateSigningRequest | None = None,
    expiry: int | None = None,
    nonce: str | None = None,
    enrollment_id: str | None = None,
) -> dict[str, Any]:
    """What a device sends: a fresh CSR and a token over it (or over ``token_csr``)."""
    pem, request = csr or make_csr(device_id)
    expiry = int(time.time()) + 300 if expiry is None else expiry
    nonce = nonce or secrets.token_urlsafe(18)
    token = symmetric_key_token(
        device_key, device_id, expiry, nonce, csr_sha256(token_csr or request)
    )
    body: dict[str, Any] = {
        "mechanism": "symmetric-key",
        "csr": pem,
        "registration_id": device_id,
        "evidence": {"expiry": expiry, "nonce": nonce, "token": token},
    }
    if enrollment_id is not None:
        body["enrollment_id"] = enrollment_id
    return body


def counts(service: Service) -> tuple[int, int]:
    runtime = service.runtime
    return len(runtime.devices.search(limit=10_000)), len(runtime.ledger.search(limit=10_000))


@pytest.mark.both_databases
def test_devices_of_a_group_provision_with_their_derived_keys(service: Service) -> None:
    with service.admin() as admin:
        create_enrollment(admin, id="other-group")
        group = create_enrollment(admin, id="thermometers", services={"mqtt": "mqtts://b:8883"})
    group_key = base64.b64decode(group["group_key"])
    with service.client() as client:
        found = client.post(
            "/api/v1/provision",
            json=request_body(derive_device_key(group_key, "th-0001"), "th-0001"),
        )
        named = client.post(
            "/api/v1/provision",
            json=request_body(
                derive_device_key(group_key, "th-0002"), "th-0002", enrollment_id="thermometers"
            ),
        )
    for response, device_id in ((found, "th-0001"), (named, "th-0002")):
        assert response.status_code == 200, response.text
        bundle = response.json()["bundle"]
        assert bundle["device_id"] == device_id
        assert bundle["enrollment_id"] == "thermometers"
        assert bundle["owner"] == "acme"
        assert bundle["services"]["mqtt"] == "mqtts://b:8883"
        certificate = x509.load_pem_x509_certificate(bundle["certificate"].encode())
        cn = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert cn == device_id
    device = service.runtime.devices.find("acme", "th-0001")
    assert device is not None
    assert device.mechanism == "symmetric-key"
    assert device.enrollment_id == "thermometers"


def test_an_individual_enrollment_uses_its_key_as_the_device_key(service: Service) -> None:
    key = secrets.token_bytes(32)
    with service.admin() as admin:
        create_enrollment(admin, id="some-group")
        create_enrollment(
            admin,
            id="gateway-7",
            kind="individual",
            registration_id="gw-7",
            group_key=base64.b64encode(key).decode(),
            device_id_pattern=r"gw-\d+",
        )
    with service.client() as client:
        response = client.post("/api/v1/provision", json=request_body(key, "gw-7"))
    assert response.status_code == 200, response.text
    assert response.json()["bundle"]["enrollment_id"] == "gateway-7"


def test_refused_tokens_create_nothing(service: Service) -> None:
    with service.admin() as admin:
        group = create_enrollment(admin, id="meters", device_id_pattern=r"m-\d+")
        create_enrollment(
            admin,
            id="lonely",
            kind="individual",
            registration_id="lonely-1",
            group_key=base64.b64encode(secrets.token_bytes(32)).decode(),
        )
    group_key = base64.b64decode(group["group_key"])
    device_key = derive_device_key(group_key, "m-1")
    now = int(time.time())
    wrong_group = derive_device_key(secrets.token_bytes(32), "m-1")
    _, other_csr = make_csr("m-1")
    replayed_nonce = secrets.token_urlsafe(18)
    with service.client() as client:
        first = client.post(
            "/api/v1/provision", json=request_body(device_key, "m-1", nonce=replayed_nonce)
        )
        assert first.status_code == 200, first.text
        before = counts(service)
        cases = {
            "wrong derived key": (request_body(wrong_group, "m-1"), 403, "signature_invalid"),
            "token for another CSR": (
                request_body(device_key, "m-1", token_csr=other_csr),
                403,
                "signature_invalid",
            ),
            "expired": (request_body(device_key, "m-1", expiry=now - 5), 403, "request_expired"),
            "too far ahead": (
                request_body(device_key, "m-1", expiry=now + 7200),
                403,
                "request_expired",
            ),
            "replayed nonce": (
                request_body(device_key, "m-1", nonce=replayed_nonce),
                403,
                "replay_detected",
            ),
            "unknown device id": (
                request_body(secrets.token_bytes(32), "nobody-42"),
                403,
                "signature_invalid",
            ),
            "device id outside the pattern": (
                request_body(derive_device_key(group_key, "x-1"), "x-1"),
                403,
                "device_id_rejected",
            ),
            "another device's individual enrollment": (
                request_body(device_key, "m-1", enrollment_id="lonely"),
                403,
                "signature_invalid",
            ),
        }
        answers = {
            name: client.post("/api/v1/provision", json=body) for name, (body, *_) in cases.items()
        }
        no_id = request_body(device_key, "m-1")
        del no_id["registration_id"]
        no_token = request_body(device_key, "m-1")
        del no_token["evidence"]["token"]
        missing = [client.post("/api/v1/provision", json=body) for body in (no_id, no_token)]
    for name, (_, status, code) in cases.items():
        response = answers[name]
        assert response.status_code == status, (name, response.text)
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["code"] == code, name
    for response in missing:
        assert response.status_code == 400
        assert response.json()["code"] == "evidence_missing"
    # An unknown id and a wrong key look the same from outside.
    assert (
        answers["unknown device id"].json()["detail"]
        == answers["wrong derived key"].json()["detail"]
    )
    assert counts(service) == before
