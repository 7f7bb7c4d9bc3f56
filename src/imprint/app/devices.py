"""Device operations: the fleet and each device's lifecycle, for every admin surface.

Viewers read; operators approve, disable, enable, revoke and reset. Revoking a device
revokes every certificate it still holds, not only its current one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from imprint.app.base import Operations, Page
from imprint.app.scoping import scope_of, visible_device, visible_enrollment
from imprint.errors import Conflict, InvalidValue, NotFound
from imprint.pki.authority import parse_reason
from imprint.pki.records import CertificateRecord, CertificateStatus
from imprint.provisioning import lifecycle
from imprint.provisioning.devices import Device, DeviceStatus, StepRecord
from imprint.provisioning.lifecycle import EnrollmentRevocation
from imprint.store.listing import Order
from imprint.tenancy.access import Principal
from imprint.tenancy.roles import Role

__all__ = ["BULK_ACTIONS", "BulkResult", "DeviceOperations", "bulk_applies"]

#: The actions one request may apply to many devices.
BULK_ACTIONS = ("approve", "disable", "revoke")

#: The most devices one bulk action takes.
BULK_LIMIT = 20_000


def bulk_applies(action: str, status: str, certificate_status: str | None) -> bool:
    """Whether ``action`` changes a device of ``status`` whose current certificate has
    ``certificate_status`` (None: it has none): approve a pending device, disable one not
    disabled, revoke one whose certificate is still issued."""
    if action == "approve":
        return status == DeviceStatus.PENDING.value
    if action == "disable":
        return status != DeviceStatus.DISABLED.value
    if action == "revoke":
        return certificate_status == CertificateStatus.ISSUED.value
    return False


@dataclass(frozen=True, slots=True)
class BulkResult:
    """What a bulk action did: the devices it changed, and those it left as they were
    (the action did not apply to them, or no longer did when their turn came)."""

    done: Sequence[Device]
    skipped: Sequence[Device]


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

    def attributes(
        self, principal: Principal, device_ref: str, *, owner: str | None = None
    ) -> Mapping[str, str]:
        """The attributes the organization's provisioning hook added to the device at its
        last registration (empty when no hook added any), seen as the device is.

        Raises:
            NotFound: no such device, or a foreign one.
            Conflict: the device id names devices of several owners (``device_ambiguous``).
        """
        device = visible_device(self._rt, principal, device_ref, Role.VIEWER, owner=owner)
        claims = self._rt.webhook_store.claims_of(device.id)
        return {} if claims is None else dict(sorted(claims[0].items()))

    def certificates(
        self, principal: Principal, device_ref: str, *, limit: int = 100
    ) -> Sequence[CertificateRecord]:
        """Every certificate ever issued to the device, newest first."""
        device = visible_device(self._rt, principal, device_ref, Role.VIEWER)
        return self._rt.ledger.search(
            device_ref=device.id, order=Order("created", descending=True), limit=limit
        )

    def bulk(
        self,
        principal: Principal,
        action: str,
        device_refs: Sequence[str],
        reason: str = "unspecified",
    ) -> BulkResult:
        """Apply ``action`` (one of :data:`BULK_ACTIONS`) to each device, each through its
        own operation (one transaction and one audit entry per device).

        Every reference is looked up first: one the principal cannot act on refuses the
        whole request before anything changes. A device the action does not apply to
        (:func:`bulk_applies`) is skipped.

        Raises:
            InvalidValue: an unknown action or reason, or more than ``BULK_LIMIT`` devices.
            NotFound, PermissionDenied: a device not visible, or the role is too low.
        """
        if action not in BULK_ACTIONS:
            raise InvalidValue(f"no bulk action {action!r}", code="action_unknown")
        if len(device_refs) > BULK_LIMIT:
            raise InvalidValue(f"at most {BULK_LIMIT} devices at once", code="too_many_devices")
        if action == "revoke":
            parse_reason(reason)
        found = list(
            {
                d.id: d
                for d in (
                    visible_device(self._rt, principal, ref, Role.OPERATOR) for ref in device_refs
                )
            }.values()
        )
        done: list[Device] = []
        skipped: list[Device] = []
        for device in found:
            if not bulk_applies(action, device.status.value, self._certificate_status(device)):
                skipped.append(device)
                continue
            try:
                if action == "approve":
                    done.append(self.approve(principal, device.id))
                elif action == "disable":
                    done.append(self.disable(principal, device.id))
                else:
                    done.append(self.revoke(principal, device.id, reason, disable=True))
            except Conflict:  # changed by someone else meanwhile
                skipped.append(device)
        return BulkResult(done, skipped)

    def _certificate_status(self, device: Device) -> str | None:
        if device.certificate_serial is None:
            return None
        try:
            return self._rt.ledger.get(device.certificate_serial).status.value
        except NotFound:
            return None

    def approve(self, principal: Principal, device_ref: str, *, owner: str | None = None) -> Device:
        """Approve a pending device; its next request with the same key is issued.

        Raises:
            NotFound, PermissionDenied: not visible, or the role is too low.
            Conflict: the device is not pending.
        """
        with self._transaction():
            ref = visible_device(self._rt, principal, device_ref, Role.OPERATOR, owner=owner).id
            device = lifecycle.approve(self._rt.devices, ref, at=self._now())
            self._audit(principal, "device.approve", "device", device.id, org_id=device.owner)
        return device

    def disable(self, principal: Principal, device_ref: str, *, owner: str | None = None) -> Device:
        """Refuse the device's provisioning and renewal (its certificates stay valid)."""
        with self._transaction():
            ref = visible_device(self._rt, principal, device_ref, Role.OPERATOR, owner=owner).id
            device = lifecycle.disable(self._rt.devices, ref, at=self._now())
            self._audit(principal, "device.disable", "device", device.id, org_id=device.owner)
        return device

    def enable(self, principal: Principal, device_ref: str, *, owner: str | None = None) -> Device:
        """Allow a disabled device again.

        Raises:
            Conflict: the device is not disabled.
        """
        with self._transaction():
            ref = visible_device(self._rt, principal, device_ref, Role.OPERATOR, owner=owner).id
            device = lifecycle.enable(self._rt.devices, ref, at=self._now())
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
                self._rt.authority,
                self._rt.devices,
                ref,
                flag,
                at=self._now(),
                disable_device=disable,
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
            device = lifecycle.factory_reset(
                self._rt.authority, self._rt.devices, ref, at=self._now()
            )
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
                self._rt.authority,
                self._rt.enrollments,
                self._rt.devices,
                enrollment_id,
                flag,
                at=self._now(),
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
