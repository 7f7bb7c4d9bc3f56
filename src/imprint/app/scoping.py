"""Find an admin object the caller may reach, or answer as if it did not exist.

Every route that names an enrollment, device or certificate looks it up here first,
before any other check, so a foreign object answers exactly what a missing one does
(404 with the same message), whatever else is wrong with the request. The role
needed is checked next (403 ``role_insufficient``). See docs/tenancy.md for the table
of which role each action needs.
"""

from __future__ import annotations

from imprint.errors import Conflict, NotFound
from imprint.pki.records import CertificateRecord
from imprint.pki.serials import normalize_serial
from imprint.provisioning.devices import Device
from imprint.provisioning.enrollments import Enrollment
from imprint.runtime import Runtime
from imprint.tenancy.access import Principal, authorize, org_scope
from imprint.tenancy.roles import Role

__all__ = ["scope_of", "visible_certificate", "visible_device", "visible_enrollment"]


def scope_of(runtime: Runtime, principal: Principal) -> set[str] | None:
    """The organization ids the caller sees, for list queries (None: all)."""
    return org_scope(principal, runtime.org_tree())


def visible_enrollment(
    runtime: Runtime, principal: Principal, enrollment_id: str, needed: Role
) -> Enrollment:
    """The enrollment, if the caller holds ``needed`` in its owner organization.

    Raises:
        NotFound: no such enrollment, or one of an organization the caller does not see.
        PermissionDenied: visible, but the role is too low.
    """
    enrollment = runtime.enrollments.get(enrollment_id)
    tree = runtime.org_tree()
    authorize(principal, enrollment.owner, needed, tree, what=f"enrollment {enrollment_id!r}")
    return enrollment


def visible_device(
    runtime: Runtime,
    principal: Principal,
    device_ref: str,
    needed: Role,
    *,
    owner: str | None = None,
) -> Device:
    """The device, if the caller holds ``needed`` in its owner organization.

    ``device_ref`` is imprint's reference (a UUID) or the device's own id; ``owner``
    narrows a device id to one organization. A device id that names visible devices of
    several owners is ambiguous.

    Raises:
        NotFound: no such device, or a foreign one.
        Conflict: the device id is ambiguous (``device_ambiguous``): name the owner.
        PermissionDenied: visible, but the role is too low.
    """
    try:
        device = runtime.devices.get(device_ref)
        if owner is not None and device.owner != owner:
            raise NotFound(f"no device {device_ref!r}")
    except NotFound:
        device = _by_device_id(runtime, principal, device_ref, owner)
    authorize(principal, device.owner, needed, runtime.org_tree(), what=f"device {device_ref!r}")
    return device


def _by_device_id(
    runtime: Runtime, principal: Principal, device_id: str, owner: str | None
) -> Device:
    if owner is not None:
        found = runtime.devices.find(owner, device_id) if len(device_id) <= 200 else None
        if found is None:
            raise NotFound(f"no device {device_id!r} of owner {owner!r}")
        return found
    scope = scope_of(runtime, principal)
    matches = runtime.devices.with_device_id(device_id, scope) if len(device_id) <= 200 else []
    if not matches:
        raise NotFound(f"no device {device_id!r}")
    if len(matches) > 1:
        owners = ", ".join(sorted(d.owner for d in matches))
        raise Conflict(
            f"device id {device_id!r} names devices of several owners ({owners}): name the owner",
            code="device_ambiguous",
        )
    return matches[0]


def visible_certificate(
    runtime: Runtime, principal: Principal, serial: str, needed: Role
) -> CertificateRecord:
    """The certificate record, if the caller holds ``needed`` in the organization it was
    issued for. A certificate issued for no organization belongs to the whole instance.

    Raises:
        InvalidValue: not a hexadecimal serial.
        NotFound: no such certificate, or a foreign one.
        PermissionDenied: visible, but the role is too low.
    """
    canonical = normalize_serial(serial)
    record = runtime.ledger.get(canonical)
    what = f"certificate with serial {canonical}"
    authorize(principal, record.owner, needed, runtime.org_tree(), what=what)
    return record
