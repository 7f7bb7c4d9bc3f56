"""Provisioning policy and the device lifecycle, driven through client-ca devices."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from imprint.errors import InvalidValue
from tests.integration.conftest import Service, ensure_org, with_orgs, write_credentials


@pytest.fixture
def service(service: Service) -> Service:
    """The server, with the organizations this module's enrollments name."""
    return with_orgs(service, "acme")


class Factory:
    """A device maker's CA, trusted by one client-ca enrollment."""

    def __init__(self, service: Service, directory: Path, enrollment: str, **policy: Any) -> None:
        self.service = service
        self.directory = directory
        self.enrollment = enrollment
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{enrollment} CA")])
        now = datetime.now(UTC)
        self.ca = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        with service.admin() as client:
            ensure_org(client, "acme")
            created = client.post(
                "/api/v1/enrollments",
                json={"id": enrollment, "mechanism": "client-ca", "owner": "acme", **policy},
            )
            assert created.status_code == 201, created.text
            pem = self.ca.public_bytes(serialization.Encoding.PEM).decode()
            added = client.post(f"/api/v1/enrollments/{enrollment}/client-cas", json={"pem": pem})
            assert added.status_code == 201, added.text

    def device(self, common_name: str) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=5))
            .sign(self.key, hashes.SHA256())
        )
        pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
        tag = f"{common_name}-{x509.random_serial_number() % 10**6}"
        return write_credentials(self.directory, tag, pem, key)

    def provision(
        self, credentials: tuple[Path, Path], csr: str | None = None, key: Any = None
    ) -> httpx.Response:
        operational = key or ec.generate_private_key(ec.SECP256R1())
        if csr is None:
            csr = (
                x509.CertificateSigningRequestBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ignored")]))
                .sign(operational, hashes.SHA256())
                .public_bytes(serialization.Encoding.PEM)
                .decode()
            )
        with self.service.client(cert=credentials) as client:
            return client.post("/api/v1/provision", json={"mechanism": "client-ca", "csr": csr})


def csr_of(key: Any) -> str:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )


def device_ref(service: Service, device_id: str) -> str:
    with service.admin() as client:
        items = client.get("/api/v1/devices").json()["items"]
    return next(item["id"] for item in items if item["device_id"] == device_id)


def device_action(service: Service, ref: str, action: str) -> str:
    """An administrator's ``disable`` or ``enable`` of a device: its status after."""
    with service.admin() as client:
        return str(client.post(f"/api/v1/devices/{ref}/{action}").json()["status"])


def test_bundle_has_certificate_chain_anchor_psk_and_services(
    service: Service, tmp_path: Path
) -> None:
    factory = Factory(
        service,
        tmp_path,
        "full",
        pre_shared_key="0123456789abcdef0123",
        services={"mqtt": "mqtts://broker.local:8883"},
        validity_days=7,
    )
    response = factory.provision(factory.device("meter-1"))
    assert response.status_code == 200, response.text
    bundle = response.json()["bundle"]
    certificate = x509.load_pem_x509_certificate(bundle["certificate"].encode())
    assert certificate.subject.rfc4514_string() == "CN=meter-1,OU=acme"
    assert bundle["pre_shared_key"] == "0123456789abcdef0123"
    assert bundle["services"] == {"mqtt": "mqtts://broker.local:8883"}
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert timedelta(days=7) <= lifetime <= timedelta(days=7, minutes=6)
    renew_after = datetime.fromisoformat(bundle["renew_after"])
    assert certificate.not_valid_before_utc < renew_after < certificate.not_valid_after_utc
    anchors = [x509.load_pem_x509_certificate(p.encode()) for p in bundle["trust_anchors"]]
    assert anchors == [service.runtime.authority.material.root]
    chain = x509.load_pem_x509_certificates(bundle["certificate_chain"].encode())
    assert chain[0] == certificate
    assert chain[1] == service.runtime.authority.material.issuing


def test_retry_with_the_same_key_returns_the_same_certificate(
    service: Service, tmp_path: Path
) -> None:
    factory = Factory(service, tmp_path, "retry")
    credentials = factory.device("meter-2")
    key = ec.generate_private_key(ec.SECP256R1())
    first = factory.provision(credentials, csr_of(key)).json()["bundle"]
    second = factory.provision(credentials, csr_of(key)).json()["bundle"]
    assert first["serial"] == second["serial"]
    third = factory.provision(credentials).json()["bundle"]  # a new key: a new certificate
    assert third["serial"] != first["serial"]
    old = service.runtime.ledger.get(first["serial"])
    assert old.revocation_reason == "superseded"


def test_manual_approval_then_approve(service: Service, tmp_path: Path) -> None:
    factory = Factory(service, tmp_path, "held", manual_approval=True)
    credentials = factory.device("meter-3")
    key = ec.generate_private_key(ec.SECP256R1())
    pending = factory.provision(credentials, csr_of(key))
    assert pending.status_code == 202
    assert pending.headers["retry-after"] == "30"
    assert pending.json()["status"] == "pending"
    # Nothing but the server's own certificate has been issued yet.
    assert all(r.requested_by == "imprint:server" for r in service.runtime.ledger.search(limit=100))
    ref = device_ref(service, "meter-3")
    with service.admin() as client:
        listed = client.get("/api/v1/devices", params={"status": "pending"}).json()["items"]
        approved = client.post(f"/api/v1/devices/{ref}/approve")
        again = client.post(f"/api/v1/devices/{ref}/approve")
    assert [d["device_id"] for d in listed] == ["meter-3"]
    assert approved.json()["status"] == "approved"
    assert (again.status_code, again.json()["code"]) == (409, "not_pending")
    other_key = factory.provision(credentials)  # approval was for the first key
    assert (other_key.status_code, other_key.json()["code"]) == (403, "key_mismatch")
    issued = factory.provision(credentials, csr_of(key))
    assert issued.status_code == 200
    assert issued.json()["bundle"]["device_id"] == "meter-3"


@pytest.mark.both_databases
def test_disable_enable_revoke_and_reset(service: Service, tmp_path: Path) -> None:
    factory = Factory(service, tmp_path, "cycle")
    credentials = factory.device("meter-4")
    serial = factory.provision(credentials).json()["bundle"]["serial"]
    ref = device_ref(service, "meter-4")
    assert device_action(service, ref, "disable") == "disabled"
    refused = factory.provision(credentials)
    assert (refused.status_code, refused.json()["code"]) == (403, "device_disabled")
    assert device_action(service, ref, "enable") == "provisioned"
    with service.admin() as client:
        revoked = client.post(f"/api/v1/devices/{ref}/revoke", json={"reason": "keyCompromise"})
        crl = x509.load_der_x509_crl(client.get("/crl/issuing.crl").content)
    assert revoked.json()["status"] == "disabled"
    assert crl.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None

    with service.admin() as client:
        reset = client.post(f"/api/v1/devices/{ref}/reset")
    assert reset.json()["status"] == "reset"
    assert reset.json()["pinned_fingerprint"] is None
    # Released: the same device, even with a new certificate of its maker, provisions again.
    again = factory.provision(factory.device("meter-4"))
    assert again.status_code == 200
    assert again.json()["bundle"]["serial"] != serial


def test_timeline_records_every_step(service: Service, tmp_path: Path) -> None:
    factory = Factory(service, tmp_path, "timeline")
    factory.provision(factory.device("meter-5"))
    ref = device_ref(service, "meter-5")
    with service.admin() as client:
        detail = client.get(f"/api/v1/devices/{ref}").json()
    steps = [(s["step"], s["status"]) for s in detail["timeline"]]
    assert ("policy", "ok") in steps
    assert ("issue", "ok") in steps
    assert ("bundle", "ok") in steps


def test_an_issuing_refusal_comes_after_the_device_checks(
    service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The certificate is prepared before the device's lock is taken; a refusal there
    (here an expired issuing CA, made to happen) is answered only where issuing would
    refuse, after the device's own checks, and stays on the device's timeline."""
    factory = Factory(service, tmp_path, "prepared")
    credentials = factory.device("meter-7")
    assert factory.provision(credentials).status_code == 200
    ref = device_ref(service, "meter-7")

    def expired(_request: object) -> None:
        raise InvalidValue("the issuing CA has expired")

    monkeypatch.setattr(service.runtime.authority, "prepare", expired)
    assert device_action(service, ref, "disable") == "disabled"
    refused = factory.provision(credentials)
    assert (refused.status_code, refused.json()["code"]) == (403, "device_disabled")
    assert device_action(service, ref, "enable") == "provisioned"
    refused = factory.provision(credentials)
    assert (refused.status_code, refused.json()["code"]) == (400, "value_invalid")
    with service.admin() as client:
        timeline = client.get(f"/api/v1/devices/{ref}").json()["timeline"]
    failed = [s for s in timeline if s["status"] == "failed"]
    assert [(s["step"], s["code"]) for s in failed] == [
        ("policy", "device_disabled"),
        ("issue", "value_invalid"),
    ]


def test_reset_required_policy_refuses_a_second_key(service: Service, tmp_path: Path) -> None:
    factory = Factory(service, tmp_path, "strict", reprovision="reset-required")
    credentials = factory.device("meter-6")
    key = ec.generate_private_key(ec.SECP256R1())
    assert factory.provision(credentials, csr_of(key)).status_code == 200
    assert factory.provision(credentials, csr_of(key)).status_code == 200  # same key: a retry
    refused = factory.provision(credentials)
    assert (refused.status_code, refused.json()["code"]) == (403, "reprovision_refused")


@pytest.mark.parametrize(
    ("policy", "device", "key", "code"),
    [
        ({"quota": 1}, "second", None, "quota_exceeded"),
        ({"key_types": ["ec-p384"]}, "p256-device", None, "key_type_not_allowed"),
        ({"device_id_pattern": "meter-[0-9]+"}, "toaster", None, "device_id_rejected"),
        (
            {"valid_until": "2000-01-01T00:00:00Z", "valid_from": "1999-01-01T00:00:00Z"},
            "late",
            None,
            "enrollment_closed",
        ),
        ({"key_types": ["ec-p256"]}, "rsa-device", "rsa", "key_type_not_allowed"),
    ],
)
def test_policy_refusals_leave_no_trace(
    service: Service,
    tmp_path: Path,
    policy: dict[str, Any],
    device: str,
    key: str | None,
    code: str,
) -> None:
    factory = Factory(service, tmp_path, "policy", **policy)
    if policy.get("quota"):
        assert factory.provision(factory.device("first")).status_code == 200
    devices_before = len(service.runtime.devices.search(limit=100))
    certificates_before = len(service.runtime.ledger.search(limit=100))
    operational = rsa.generate_private_key(65537, 2048) if key == "rsa" else None
    response = factory.provision(
        factory.device(device), csr_of(operational) if operational else None
    )
    assert response.status_code == 403, response.text
    assert response.json()["code"] == code
    assert len(service.runtime.devices.search(limit=100)) == devices_before
    assert len(service.runtime.ledger.search(limit=100)) == certificates_before


def test_revoke_a_whole_enrollment(service: Service, tmp_path: Path) -> None:
    factory = Factory(service, tmp_path, "batch")
    serials = [
        factory.provision(factory.device(f"b-{i}")).json()["bundle"]["serial"] for i in range(3)
    ]
    with service.admin() as client:
        result = client.post("/api/v1/enrollments/batch/revoke", json={"reason": "cACompromise"})
        enrollment = client.get("/api/v1/enrollments/batch").json()
        crl = x509.load_der_x509_crl(client.get("/crl/issuing.crl").content)
    assert result.json() == {"enrollment_id": "batch", "devices": 3, "certificates_revoked": 3}
    assert enrollment["enabled"] is False
    for serial in serials:
        assert crl.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None
    refused = factory.provision(factory.device("b-9"))
    assert refused.status_code == 403


def test_unknown_device_is_404(service: Service) -> None:
    with service.admin() as client:
        for path in ("", "/approve", "/disable", "/reset"):
            method = client.get if path == "" else client.post
            response = method(f"/api/v1/devices/no-such-device{path}")
            assert (response.status_code, response.json()["code"]) == (404, "not_found")
