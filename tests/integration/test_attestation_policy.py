"""The policy attestors contribute, applied by the provisioning use case: an out-of-band
secret not registered yet holds the request, a spent secret or a pinned identity is
checked again on the locked device, and the secret is spent in the request's own unit
of work. Called directly on a real database (both backends), no HTTP in between."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from imprint.attestation.base import Evidence, SecretUsed
from imprint.attestation.oob_secret import HTTP_BASIC_FORMAT, oob_mac
from imprint.errors import ImprintError
from imprint.pki.csr import csr_sha256
from imprint.pki.records import CertificateRecord, CertificateStatus
from imprint.provisioning.devices import ProvisioningStep
from imprint.provisioning.enrollments import Mechanism
from imprint.provisioning.service import KeyTypeNotAllowed, Outcome
from imprint.provisioning.specs import EnrollmentSpec
from imprint.runtime import Runtime, prepare
from imprint.settings import Settings
from imprint.store.tables import provisioning_records
from imprint.tenancy.access import cli_principal
from tests.integration.conftest import ServerClock

pytestmark = pytest.mark.both_databases

SECRET = "printed-on-the-box-0042"


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    opened, _first = prepare(settings, clock=ServerClock())
    yield opened
    opened.close()


def _csr(curve: ec.EllipticCurve | None = None) -> x509.CertificateSigningRequest:
    key = ec.generate_private_key(curve or ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ignored")])
    return x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())


def _enroll(runtime: Runtime, enrollment_id: str, **policy: object) -> None:
    spec = EnrollmentSpec.model_validate(
        {"mechanism": "oob-secret", "owner": "acme", "id": enrollment_id, **policy}
    )
    runtime.app.enrollments.create(cli_principal(), spec)


def _evidence(
    runtime: Runtime, device_id: str, csr: x509.CertificateSigningRequest, secret: str = SECRET
) -> Evidence:
    at = runtime.clock.now()
    nonce = secrets.token_urlsafe(18)
    timestamp = int(at.timestamp())
    return Evidence(
        mechanism=Mechanism.OOB_SECRET,
        csr=csr,
        at=at,
        registration_id=device_id,
        fields={
            "timestamp": timestamp,
            "nonce": nonce,
            "mac": oob_mac(secret, device_id, timestamp, nonce, csr_sha256(csr)),
        },
        source="192.0.2.7",
    )


def _device_certificates(runtime: Runtime) -> list[CertificateRecord]:
    return [r for r in runtime.ledger.search(limit=100) if r.profile == "device"]


def _spent(runtime: Runtime, enrollment_id: str, device_id: str) -> bool:
    (secret,) = runtime.oob_secrets.for_device(device_id, [enrollment_id])
    return secret.used_at is not None


def test_no_secret_yet_holds_the_request_and_stores_nothing(runtime: Runtime) -> None:
    _enroll(runtime, "boxes")
    outcome = runtime.provisioner.provision(_evidence(runtime, "box-1", _csr()))
    assert (outcome.status, outcome.retry_after) == ("pending", 30)
    assert runtime.devices.find("acme", "box-1") is None
    assert _device_certificates(runtime) == []
    records = provisioning_records.c
    with runtime.engine.connect() as conn:
        steps = conn.execute(
            select(records.step, records.status, records.detail).where(
                records.registration_id == "box-1"
            )
        ).all()
    assert (ProvisioningStep.ATTEST.value, "pending", "waiting for the out-of-band secret") in [
        tuple(row) for row in steps
    ]


def test_the_secret_is_spent_with_the_certificate_and_not_by_a_refusal(runtime: Runtime) -> None:
    _enroll(runtime, "p256-only", key_types=["ec-p256"])
    runtime.app.oob_secrets.register(cli_principal(), "p256-only", "box-2", SECRET)
    refused = _evidence(runtime, "box-2", _csr(ec.SECP384R1()))
    with pytest.raises(KeyTypeNotAllowed):
        runtime.provisioner.provision(refused)
    assert not _spent(runtime, "p256-only", "box-2")  # refused by policy: still unspent
    outcome = runtime.provisioner.provision(_evidence(runtime, "box-2", _csr()))
    assert outcome.status == "approved"
    assert _spent(runtime, "p256-only", "box-2")


def test_an_attestation_taken_before_the_secret_was_spent_is_refused_under_the_lock(
    runtime: Runtime,
) -> None:
    """Two requests with one secret and different keys both pass attestation while the
    secret is unspent; the one that decides second sees it spent on the locked device."""
    _enroll(runtime, "boxes")
    runtime.app.oob_secrets.register(cli_principal(), "boxes", "box-3", SECRET)
    attestor = runtime.attestors[Mechanism.OOB_SECRET]
    late = attestor.attest(_evidence(runtime, "box-3", _csr()))  # before the other one
    assert runtime.provisioner.provision(_evidence(runtime, "box-3", _csr())).status == "approved"
    device = runtime.devices.find("acme", "box-3")
    (still_unspent,) = late.device_checks
    with pytest.raises(SecretUsed):
        still_unspent(device)


def test_concurrent_requests_with_one_secret_and_different_keys_issue_once(
    runtime: Runtime,
) -> None:
    _enroll(runtime, "boxes")
    runtime.app.oob_secrets.register(cli_principal(), "boxes", "box-4", SECRET)
    evidences = [_evidence(runtime, "box-4", _csr()) for _ in range(8)]
    outcomes: list[Outcome] = []
    refusals: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(len(evidences))

    def request(evidence: Evidence) -> None:
        start.wait()
        try:
            outcome = runtime.provisioner.provision(evidence)
        except ImprintError as exc:
            with lock:
                refusals.append(exc.code)
            return
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=request, args=(e,)) for e in evidences]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [o.status for o in outcomes] == ["approved"]
    assert refusals == ["secret_used"] * 7
    device = runtime.devices.find("acme", "box-4")
    assert device is not None
    later = runtime.clock.now() + timedelta(seconds=1)
    valid = runtime.ledger.valid_for_device(device.id, later)
    assert [r.serial for r in valid] == [device.certificate_serial]
    issued = [r for r in _device_certificates(runtime) if r.status is CertificateStatus.ISSUED]
    assert len(issued) == 1


def test_concurrent_requests_with_one_one_time_password_issue_once(runtime: Runtime) -> None:
    """EST's HTTP Basic with a one-time password: the password is spent in the request's
    own transaction and checked again under the device's lock, so of eight requests with
    different keys one gets a certificate and the password is then used up."""
    _enroll(runtime, "boxes")
    password, _record = runtime.app.oob_secrets.create_one_time_password(
        cli_principal(), "boxes", "box-5"
    )

    def evidence(csr: x509.CertificateSigningRequest) -> Evidence:
        return Evidence(
            mechanism=Mechanism.OOB_SECRET,
            csr=csr,
            at=runtime.clock.now(),
            registration_id="box-5",
            fields={"format": HTTP_BASIC_FORMAT, "password": password},
            source="192.0.2.7",
        )

    outcomes: list[str] = []
    refusals: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def request() -> None:
        start.wait()
        try:
            outcome = runtime.provisioner.provision(evidence(_csr()))
        except ImprintError as exc:
            with lock:
                refusals.append(exc.code)
            return
        with lock:
            outcomes.append(outcome.status)

    threads = [threading.Thread(target=request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert outcomes == ["approved"]
    assert refusals == ["secret_used"] * 7
    issued = [r for r in _device_certificates(runtime) if r.status is CertificateStatus.ISSUED]
    assert len(issued) == 1
    with pytest.raises(SecretUsed):  # and a later request with another key is refused
        runtime.provisioner.provision(evidence(_csr()))
