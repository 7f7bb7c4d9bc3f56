"""The provisioning use case and the device operations, called directly on a real
database (both backends) with no HTTP in between."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from imprint.attestation.base import CertificateRevoked, Evidence
from imprint.attestation.symmetric_key import csr_sha256, derive_device_key, symmetric_key_token
from imprint.audit import AuditQuery, verify_chain
from imprint.errors import NotFound, PermissionDenied
from imprint.pki.records import CertificateStatus
from imprint.provisioning.devices import DeviceStatus
from imprint.provisioning.enrollments import Mechanism, create_enrollment
from imprint.provisioning.service import Outcome, ReprovisionRefused
from imprint.provisioning.specs import EnrollmentSpec, enrollment_from
from imprint.runtime import Runtime, prepare
from imprint.settings import Settings
from imprint.tenancy.access import Principal, cli_principal
from imprint.tenancy.roles import Role

# Transactions on a real database: every test here runs on PostgreSQL too (see
# tests/conftest.py).
pytestmark = pytest.mark.both_databases


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    opened, _first = prepare(settings)
    yield opened
    opened.close()


def _csr() -> x509.CertificateSigningRequest:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ignored")])
    return x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())


def _enroll(runtime: Runtime, enrollment_id: str, **policy: object) -> bytes:
    """A symmetric-key group of organization acme; its group key."""
    spec = EnrollmentSpec.model_validate(
        {"mechanism": "symmetric-key", "owner": "acme", "id": enrollment_id, **policy}
    )
    enrollment = create_enrollment(runtime.enrollments, enrollment_from(spec))
    assert enrollment.group_key is not None
    return enrollment.group_key


def _provision(runtime: Runtime, group_key: bytes, device_id: str) -> Outcome:
    csr = _csr()
    expiry, nonce = int(time.time()) + 300, secrets.token_urlsafe(18)
    key = derive_device_key(group_key, device_id)
    token = symmetric_key_token(key, device_id, expiry, nonce, csr_sha256(csr))
    return runtime.provisioner.provision(
        Evidence(
            mechanism=Mechanism.SYMMETRIC_KEY,
            csr=csr,
            at=datetime.now(UTC),
            registration_id=device_id,
            fields={"expiry": expiry, "nonce": nonce, "token": token},
            source="192.0.2.1",
        )
    )


def test_provisioning_issues_and_reprovisioning_supersedes(runtime: Runtime) -> None:
    group_key = _enroll(runtime, "use-case")
    first = _provision(runtime, group_key, "uc-1")
    assert first.status == "approved"
    assert first.bundle is not None
    second = _provision(runtime, group_key, "uc-1")
    assert second.bundle is not None
    device = runtime.devices.find("acme", "uc-1")
    assert device is not None
    assert device.certificate_serial == second.bundle.serial
    old = runtime.ledger.get(str(first.bundle.serial))
    assert (old.status, old.revocation_reason) == (CertificateStatus.REVOKED, "superseded")
    assert old.device_ref == device.id
    valid = runtime.ledger.valid_for_device(device.id, datetime.now(UTC))
    assert [r.serial for r in valid] == [second.bundle.serial]
    # Each issuance is in the audit log, with the device as its evidence named it.
    entries = runtime.audit.search(AuditQuery(action="device.provision"))
    assert [(e.actor, e.target_id, e.details["serial"]) for e in entries] == [
        ("device:uc-1", device.id, second.bundle.serial),
        ("device:uc-1", device.id, first.bundle.serial),
    ]
    assert entries[0].details["superseded"] == first.bundle.serial
    assert verify_chain(runtime.audit).ok


def test_a_refusal_rolls_back_everything_but_its_step_records(runtime: Runtime) -> None:
    group_key = _enroll(runtime, "strict", reprovision="reset-required")
    assert _provision(runtime, group_key, "uc-2").status == "approved"
    before = len(runtime.ledger.search(limit=1000))
    with pytest.raises(ReprovisionRefused):
        _provision(runtime, group_key, "uc-2")
    assert len(runtime.ledger.search(limit=1000)) == before
    device = runtime.devices.find("acme", "uc-2")
    assert device is not None
    codes = [r.code for r in runtime.records.for_device(device.id)]
    assert "reprovision_refused" in codes


def test_device_operations_authorize_act_and_audit(runtime: Runtime) -> None:
    group_key = _enroll(runtime, "ops")
    outcome = _provision(runtime, group_key, "uc-3")
    assert outcome.device_ref is not None
    ref = outcome.device_ref
    stranger = Principal("user", "u-1", "mallory", {"globex": Role.ADMIN})
    viewer = Principal("user", "u-2", "victor", {"acme": Role.VIEWER})
    with pytest.raises(NotFound):
        runtime.app.devices.revoke(stranger, ref, "keyCompromise", disable=True)
    with pytest.raises(PermissionDenied):
        runtime.app.devices.revoke(viewer, ref, "keyCompromise", disable=True)
    assert runtime.devices.get(ref).status is DeviceStatus.PROVISIONED
    cli = cli_principal()
    revoked = runtime.app.devices.revoke(cli, ref, "keyCompromise", disable=True)
    assert revoked.status is DeviceStatus.DISABLED
    record = runtime.ledger.get(str(outcome.bundle.serial if outcome.bundle else ""))
    assert record.status is CertificateStatus.REVOKED
    (entry,) = runtime.audit.search(AuditQuery(action="device.revoke"))
    assert (entry.actor, entry.target_id, entry.org_id) == (cli.actor, ref, "acme")
    assert entry.details["reason"] == "keyCompromise"
    assert cli.actor.startswith("cli:")


def test_an_operation_that_fails_leaves_no_audit_entry_and_no_change(runtime: Runtime) -> None:
    group_key = _enroll(runtime, "ops-fail")
    outcome = _provision(runtime, group_key, "uc-4")
    assert outcome.device_ref is not None
    with pytest.raises(Exception, match="not pending"):
        runtime.app.devices.approve(cli_principal(), outcome.device_ref)
    assert runtime.audit.search(AuditQuery(action="device.approve")) == []


def test_renewal_of_a_superseded_certificate_with_another_key_is_refused(
    runtime: Runtime,
) -> None:
    group_key = _enroll(runtime, "renewals")
    first = _provision(runtime, group_key, "uc-5")
    assert first.bundle is not None
    current = x509.load_pem_x509_certificate(str(first.bundle.certificate_pem).encode())

    def renew() -> Outcome:
        return runtime.provisioner.renew(
            Evidence(
                mechanism=Mechanism.RENEWAL,
                csr=_csr(),
                at=datetime.now(UTC),
                client_certificate=current,
                source="192.0.2.1",
            )
        )

    renewed = renew()
    assert renewed.bundle is not None
    assert renewed.bundle.serial != first.bundle.serial
    with pytest.raises(CertificateRevoked):
        renew()


def test_provision_refuses_renewal_evidence(runtime: Runtime) -> None:
    evidence = Evidence(mechanism=Mechanism.RENEWAL, csr=_csr(), at=datetime.now(UTC))
    with pytest.raises(Exception, match="not enabled"):
        runtime.provisioner.provision(replace(evidence))
