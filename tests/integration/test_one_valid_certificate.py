"""A device never holds two valid certificates, whatever the interleaving of its requests,
and revoking a device leaves it none (over real HTTPS, both databases)."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import update

from imprint.pki.records import CertificateStatus
from imprint.store.tables import certificates
from tests.integration.conftest import Service, with_orgs, write_credentials
from tests.integration.test_lifecycle import csr_of
from tests.integration.test_renewal import provisioned
from tests.integration.test_symmetric_key import create_enrollment, make_csr, request_body
from tests.integration.test_x509_attestation import Manufacturer, enroll, signed_body
from tests.integration.test_x509_attestation import acme as acme  # the fixture

# Concurrency and locking: every test here runs on PostgreSQL too (see tests/conftest.py).
pytestmark = pytest.mark.both_databases

PARALLEL = 16


@pytest.fixture
def service(service: Service) -> Service:
    """The server, with the organizations this module's enrollments name."""
    return with_orgs(service, "acme")


def _device_certificates(service: Service, device_id: str) -> dict[str, CertificateStatus]:
    """Every certificate issued with the device's name, by serial."""
    found = service.runtime.ledger.search(limit=10_000)
    return {r.serial: r.status for r in found if r.subject.startswith(f"CN={device_id},")}


def _crl_serials(service: Service) -> set[str]:
    with service.client() as client:
        der = client.get("/crl/issuing.crl").content
    crl = x509.load_der_x509_crl(der)
    return {format(entry.serial_number, "x") for entry in crl}


def _at_once(calls: list[httpx.Request], service: Service) -> list[httpx.Response]:
    """Send ``calls`` in parallel, each on its own connection."""

    def send(request: httpx.Request) -> httpx.Response:
        with service.client() as client:
            return client.send(request)

    with ThreadPoolExecutor(PARALLEL) as pool:
        return list(pool.map(send, calls))


@pytest.mark.slow
def test_concurrent_provisions_of_one_device_leave_one_valid_certificate(
    service: Service,
) -> None:
    with service.admin() as admin:
        group = create_enrollment(admin, id="racers")
    from imprint.attestation.symmetric_key import derive_device_key

    device_key = derive_device_key(base64.b64decode(group["group_key"]), "racer-1")
    # Sixteen requests for one device, each with its own key pair.
    bodies = [request_body(device_key, "racer-1", csr=make_csr("racer-1")) for _ in range(PARALLEL)]
    calls = [httpx.Request("POST", f"{service.base_url}/api/v1/provision", json=b) for b in bodies]
    for _round in range(2):
        responses = _at_once(calls, service)
        assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
        device = service.runtime.devices.find("acme", "racer-1")
        assert device is not None
        issued = _device_certificates(service, "racer-1")
        valid = [s for s, status in issued.items() if status is CertificateStatus.ISSUED]
        # Each request re-provisioned the device as the one before left it: every
        # certificate but the last is superseded, and the last is the device's.
        assert valid == [device.certificate_serial]
        assert set(issued) - set(valid) <= _crl_serials(service)
        calls = [
            httpx.Request("POST", f"{service.base_url}/api/v1/provision", json=b)
            for b in (
                request_body(device_key, "racer-1", csr=make_csr("racer-1"))
                for _ in range(PARALLEL)
            )
        ]
    assert len(_device_certificates(service, "racer-1")) == 2 * PARALLEL


def test_concurrent_signed_registrations_of_one_device_leave_one_valid_certificate(
    service: Service, acme: Manufacturer
) -> None:
    """Signed requests spend their nonce and take the device's lock in one statement on
    PostgreSQL: racing each other, each still decides alone, and a body sent many times
    at once is answered once."""
    enroll(service, acme.chain())
    leaf, key = acme.line.idevid("racer-x")
    url = f"{service.base_url}/api/v1/provision"
    chain = [acme.line.certificate]
    bodies = [signed_body(service, leaf, key, chain) for _ in range(PARALLEL)]
    responses = _at_once([httpx.Request("POST", url, json=b) for b in bodies], service)
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    device = service.runtime.devices.find("acme", "racer-x")
    assert device is not None
    issued = _device_certificates(service, "racer-x")
    assert len(issued) == PARALLEL
    valid = [s for s, status in issued.items() if status is CertificateStatus.ISSUED]
    assert valid == [device.certificate_serial]
    # One body, sent PARALLEL times at once: one answer, the rest replays (or, once the
    # replays are many, refused by the failed-attempt limits before they are looked at).
    replayed = signed_body(service, leaf, key, chain)
    responses = _at_once([httpx.Request("POST", url, json=replayed)] * PARALLEL, service)
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) == 1, [r.text for r in responses]
    refusals = {r.json()["code"] for r in responses if r.status_code != 200}
    assert "replay_detected" in refusals
    assert refusals <= {"replay_detected", "too_many_attempts"}
    assert len(_device_certificates(service, "racer-x")) == PARALLEL + 1


def test_concurrent_renewals_leave_one_valid_certificate(service: Service, tmp_path: Path) -> None:
    _factory, key, bundle = provisioned(service, tmp_path, "race-r1")
    credentials = write_credentials(tmp_path, "race-r1-op", bundle["certificate_chain"], key)
    new_keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(PARALLEL)]

    def renew(new_key: ec.EllipticCurvePrivateKey) -> httpx.Response:
        with service.client(cert=credentials) as client:
            return client.post("/api/v1/renew", json={"csr": csr_of(new_key)})

    with ThreadPoolExecutor(PARALLEL) as pool:
        responses = list(pool.map(renew, new_keys))
    won = [r for r in responses if r.status_code == 200]
    # One renewal certifies its key; the others find the presented certificate
    # superseded and, with another key, get nothing (past ten refusals from this
    # address, the failed-attempt limit answers first).
    assert len(won) == 1, [r.text for r in responses]
    refusals = {r.json()["code"] for r in responses if r.status_code != 200}
    assert refusals <= {"certificate_revoked", "too_many_attempts"}, refusals
    device = service.runtime.devices.find(bundle["owner"], "race-r1")
    assert device is not None
    issued = _device_certificates(service, "race-r1")
    valid = [s for s, status in issued.items() if status is CertificateStatus.ISSUED]
    assert valid == [device.certificate_serial] == [won[0].json()["bundle"]["serial"]]
    assert bundle["serial"] in _crl_serials(service)


def test_revoking_a_device_revokes_every_certificate_it_still_holds(
    service: Service, tmp_path: Path
) -> None:
    _factory, key, first = provisioned(service, tmp_path, "held-1")
    credentials = write_credentials(tmp_path, "held-1-op", first["certificate_chain"], key)
    with service.client(cert=credentials) as client:
        renewed = client.post(
            "/api/v1/renew", json={"csr": csr_of(ec.generate_private_key(ec.SECP256R1()))}
        )
    assert renewed.status_code == 200, renewed.text
    current = renewed.json()["bundle"]["serial"]
    # An earlier certificate left valid, as an older version could leave one behind.
    with service.runtime.engine.begin() as conn:
        conn.execute(
            update(certificates)
            .where(certificates.c.serial == first["serial"])
            .values(status="issued", revoked_at=None, revocation_reason=None)
        )
    device = service.runtime.devices.find(first["owner"], "held-1")
    assert device is not None
    with service.admin() as admin:
        response = admin.post(
            f"/api/v1/devices/{device.id}/revoke", json={"reason": "keyCompromise"}
        )
    assert response.status_code == 200, response.text
    ledger = service.runtime.ledger
    for serial in (first["serial"], current):
        record = ledger.get(serial)
        assert (record.status, record.revocation_reason) == (
            CertificateStatus.REVOKED,
            "keyCompromise",
        )
    assert {first["serial"], current} <= _crl_serials(service)
    assert ledger.valid_for_device(device.id, record.revoked_at or record.not_after) == []
