"""What happens to a device after it first provisions: approval, disabling, revocation,
factory reset ("death" in the resurrecting-duckling model) and re-provisioning.

Each function takes the device's lock first (inside the caller's unit of work, see
:mod:`imprint.app.devices`), so a provisioning request running at the same time comes
before or after it, never in between.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from cryptography import x509

from imprint.errors import Conflict, ImprintError, NotFound
from imprint.pki.authority import CertificateAuthority
from imprint.provisioning.devices import Device, DeviceStatus, DeviceStore
from imprint.provisioning.enrollments import EnrollmentStore, set_enabled

__all__ = [
    "EnrollmentRevocation",
    "approve",
    "disable",
    "enable",
    "factory_reset",
    "revoke_device",
    "revoke_enrollment",
]


def _second(at: datetime) -> datetime:
    """Device lifecycle times are kept to the second."""
    return at.replace(microsecond=0)


def _locked(devices: DeviceStore, device_ref: str) -> Device:
    """The device as it is once the caller's unit of work holds its lock, so that no
    provisioning request changes it until the unit ends (see :meth:`DeviceStore.lock`).

    Raises:
        NotFound: no such device.
    """
    device = devices.get(device_ref)
    devices.lock(device.owner, device.device_id)
    return devices.get(device_ref)


def approve(devices: DeviceStore, device_ref: str, *, at: datetime) -> Device:
    """Approve a pending device; its next request with the same key is issued.

    Raises:
        NotFound: no such device.
        Conflict: the device is not pending.
    """
    device = _locked(devices, device_ref)
    if device.status is not DeviceStatus.PENDING:
        raise Conflict(
            f"device {device.device_id!r} is {device.status.value}, not pending", code="not_pending"
        )
    approved = replace(device, status=DeviceStatus.APPROVED, updated_at=_second(at))
    devices.save(approved)
    return approved


def disable(devices: DeviceStore, device_ref: str, *, at: datetime) -> Device:
    """Refuse the device's provisioning and renewal until it is enabled again.

    Its current certificate stays valid; revoke it as well to cut it off everywhere.
    """
    device = _locked(devices, device_ref)
    disabled = replace(device, status=DeviceStatus.DISABLED, updated_at=_second(at))
    devices.save(disabled)
    return disabled


def enable(devices: DeviceStore, device_ref: str, *, at: datetime) -> Device:
    """Undo :func:`disable`: back to provisioned, or released when it holds no certificate.

    Raises:
        Conflict: the device is not disabled.
    """
    device = _locked(devices, device_ref)
    if device.status is not DeviceStatus.DISABLED:
        raise Conflict(
            f"device {device.device_id!r} is {device.status.value}, not disabled",
            code="not_disabled",
        )
    status = DeviceStatus.PROVISIONED if device.certificate_serial else DeviceStatus.RESET
    enabled = replace(device, status=status, updated_at=_second(at))
    devices.save(enabled)
    return enabled


def _revoke_all(
    authority: CertificateAuthority, device: Device, reason: x509.ReasonFlags, at: datetime
) -> int:
    """Revoke every certificate the device still holds (its current one and any other
    ever issued to it that is still valid); how many."""
    serials = {r.serial for r in authority.ledger.valid_for_device(device.id, _second(at))}
    if device.certificate_serial is not None:
        serials.add(device.certificate_serial)
    revoked = 0
    for serial in sorted(serials):
        try:
            authority.revoke(serial, reason)
        except (Conflict, NotFound):
            continue  # already revoked, or never issued
        revoked += 1
    return revoked


def revoke_device(
    authority: CertificateAuthority,
    devices: DeviceStore,
    device_ref: str,
    reason: x509.ReasonFlags,
    *,
    at: datetime,
    disable_device: bool = True,
) -> Device:
    """Revoke every certificate the device holds, its current one and any earlier one
    still valid (the CRL lists them at once).

    With ``disable_device`` (the default) the device is also disabled, so its
    attestation cannot simply fetch a new certificate.

    Raises:
        NotFound: no such device.
        Conflict: the device holds no certificate.
    """
    device = _locked(devices, device_ref)
    if device.certificate_serial is None:
        raise Conflict(f"device {device.device_id!r} holds no certificate", code="no_certificate")
    _revoke_all(authority, device, reason, at)
    status = DeviceStatus.DISABLED if disable_device else device.status
    revoked = replace(device, status=status, updated_at=_second(at))
    devices.save(revoked)
    return revoked


def factory_reset(
    authority: CertificateAuthority, devices: DeviceStore, device_ref: str, *, at: datetime
) -> Device:
    """Release the device: revoke its certificates, forget its key and pinned certificate.

    It may then provision again, through any enrollment that admits it.
    """
    device = _locked(devices, device_ref)
    _revoke_all(authority, device, x509.ReasonFlags.cessation_of_operation, at)
    released = replace(
        device,
        status=DeviceStatus.RESET,
        certificate_serial=None,
        pinned_fingerprint=None,
        public_key_sha256=None,
        updated_at=_second(at),
    )
    devices.save(released)
    return released


@dataclass(frozen=True, slots=True)
class EnrollmentRevocation:
    enrollment_id: str
    devices: int
    certificates_revoked: int


def revoke_enrollment(
    authority: CertificateAuthority,
    enrollments: EnrollmentStore,
    devices: DeviceStore,
    enrollment_id: str,
    reason: x509.ReasonFlags,
    *,
    at: datetime,
) -> EnrollmentRevocation:
    """Disable an enrollment and revoke the certificates of all its devices.

    Raises:
        NotFound: no such enrollment.
    """
    set_enabled(enrollments, enrollment_id, enabled=False, at=at)
    revoked = total = 0
    after: str | None = None
    while True:
        page: Sequence[Device] = devices.search(enrollment_id=enrollment_id, limit=500, after=after)
        if not page:
            break
        for listed in page:
            total += 1
            with contextlib.suppress(ImprintError):
                device = _locked(devices, listed.id)
                revoked += _revoke_all(authority, device, reason, at)
                devices.save(replace(device, status=DeviceStatus.DISABLED, updated_at=_second(at)))
        after = page[-1].id
    return EnrollmentRevocation(enrollment_id, total, revoked)
