"""Device operations: the fleet and each device's lifecycle, for every admin surface.

Viewers read; operators approve, disable, enable, revoke and reset. Revoking a device
revokes every certificate it still holds, not only its current one.
"""

from __future__ import annotations

from collections.abc import Sequence

from imprint.app.base import Operations, Page
from imprint.app.scoping import scope_of, visible_device, visible_enrollment
from imprint.pki.authority import parse_reason
from imprint.provisioning import lifecycle
from imprint.provisioning.devices import Device, DeviceStatus, StepRecord
from imprint.provisioning.lifecycle import EnrollmentRevocation
from imprint.tenancy.access import Principal
from imprint.tenancy.roles import Role

__all__ = ["DeviceOperations"]


class DeviceOperations(Operations):
    def search(
        self,
        principal: Principal,
        *,
        status: DeviceStatus | None = None,
        enrollment_id: str | None = None,
        owner: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> Sequence[Device]:
        """Devices the principal sees, ordered by reference (``after``: the last one of
        the previous page)."""
        return self._rt.devices.search(
            owner=owner,
            enrollment_id=enrollment_id,
            status=status,
            limit=limit,
            after=after,
            owners=scope_of(self._rt, principal),
        )

    def page(
        self,
        principal: Principal,
        *,
        status: DeviceStatus | None = None,
        enrollment_id: str | None = None,
        owner: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> Page[Device]:
        """One page of the devices the principal sees, by reference, with the total that
        match and the cursor of the next page."""
        owners = scope_of(self._rt, principal)
        found = self._rt.devices.search(
            owner=owner,
            enrollment_id=enrollment_id,
            status=status,
            limit=limit + 1,
            after=after,
            owners=owners,
        )
        total = self._rt.devices.count(
            owner=owner, enrollment_id=enrollment_id, status=status, owners=owners
        )
        items = list(found[:limit])
        return Page(items, total, items[-1].id if len(found) > limit else None)

    def show(
        self, principal: Principal, device_ref: str, *, owner: str | None = None
    ) -> tuple[Device, Sequence[StepRecord]]:
        """A device and its provisioning timeline. ``device_ref`` is imprint's reference
        or the device id (``owner`` picks between devices of the same id).

        Raises:
            NotFound: no such device, or a foreign one.
            Conflict: the device id names devices of several owners (``device_ambiguous``).
        """
        device = visible_device(self._rt, principal, device_ref, Role.VIEWER, owner=owner)
        return device, self._rt.records.for_device(device.id)

    def approve(self, principal: Principal, device_ref: str, *, owner: str | None = None) -> Device:
        """Approve a pending device; its next request with the same key is issued.

        Raises:
            NotFound, PermissionDenied: not visible, or the role is too low.
            Conflict: the device is not pending.
        """
        with self._transaction():
            ref = visible_device(self._rt, principal, device_ref, Role.OPERATOR, owner=owner).id
            device = lifecycle.approve(self._rt.devices, ref)
            self._audit(principal, "device.approve", "device", device.id, org_id=device.owner)
        return device

    def disable(self, principal: Principal, device_ref: str, *, owner: str | None = None) -> Device:
        """Refuse the device's provisioning and renewal (its certificates stay valid)."""
        with self._transaction():
            ref = visible_device(self._rt, principal, device_ref, Role.OPERATOR, owner=owner).id
            device = lifecycle.disable(self._rt.devices, ref)
            self._audit(principal, "device.disable", "device", device.id, org_id=device.owner)
        return device

    def enable(self, principal: Principal, device_ref: str, *, owner: str | None = None) -> Device:
        """Allow a disabled device again.

        Raises:
            Conflict: the device is not disabled.
        """
        with self._transaction():
            ref = visible_device(self._rt, principal, device_ref, Role.OPERATOR, owner=owner).id
            device = lifecycle.enable(self._rt.devices, ref)
            self._audit(principal, "device.enable", "device", device.id, org_id=device.owner)
        return device

    def revoke(
        self,
        principal: Principal,
        device_ref: str,
        reason: str = "unspecified",
        *,
        disable: bool,
        owner: str | None = None,
    ) -> Device:
        """Revoke every certificate the device holds; with ``disable``, disable it too.

        Raises:
            InvalidValue: an unknown reason.
            Conflict: the device holds no certificate.
        """
        flag = parse_reason(reason)
        with self._transaction():
            ref = visible_device(self._rt, principal, device_ref, Role.OPERATOR, owner=owner).id
            device = lifecycle.revoke_device(
                self._rt.authority, self._rt.devices, ref, flag, disable_device=disable
            )
            self._audit(
                principal,
                "device.revoke",
                "device",
                device.id,
                org_id=device.owner,
                reason=flag.value,
            )
        return device

    def reset(self, principal: Principal, device_ref: str, *, owner: str | None = None) -> Device:
        """Factory reset: revoke its certificates and release the device."""
        with self._transaction():
            ref = visible_device(self._rt, principal, device_ref, Role.OPERATOR, owner=owner).id
            device = lifecycle.factory_reset(self._rt.authority, self._rt.devices, ref)
            self._audit(principal, "device.reset", "device", device.id, org_id=device.owner)
        return device

    def revoke_enrollment(
        self, principal: Principal, enrollment_id: str, reason: str = "unspecified"
    ) -> EnrollmentRevocation:
        """Disable an enrollment and revoke every certificate of its devices."""
        flag = parse_reason(reason)
        with self._transaction():
            enrollment = visible_enrollment(self._rt, principal, enrollment_id, Role.OPERATOR)
            result = lifecycle.revoke_enrollment(
                self._rt.authority, self._rt.enrollments, self._rt.devices, enrollment_id, flag
            )
            self._audit(
                principal,
                "enrollment.revoke",
                "enrollment",
                enrollment_id,
                org_id=enrollment.owner,
                devices=result.devices,
                certificates_revoked=result.certificates_revoked,
            )
        return result
