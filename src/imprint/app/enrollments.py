"""Enrollment operations: who may provision, and what they get, for every admin surface.

Viewers read; operators enable and disable; admins of the owner organization create,
edit and delete. Generated secrets (pre-shared key, group key) are on the enrollment
:meth:`EnrollmentOperations.create` returns, for its caller to show once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from imprint.app.base import Operations
from imprint.app.scoping import scope_of, visible_enrollment
from imprint.provisioning.enrollments import (
    Enrollment,
    Mechanism,
    ReprovisionPolicy,
    create_enrollment,
    set_enabled,
    validate_enrollment,
)
from imprint.provisioning.specs import EnrollmentSpec, enrollment_from
from imprint.tenancy.access import Principal, authorize
from imprint.tenancy.roles import Role

__all__ = ["EnrollmentEdit", "EnrollmentOperations"]


@dataclass(frozen=True, slots=True)
class EnrollmentEdit:
    """What an edit may change on an existing enrollment (every field is set as given;
    ``reprovision`` None keeps the current policy)."""

    manual_approval: bool
    quota: int | None
    validity_days: int | None
    renewal_grace_days: int
    valid_from: datetime | None
    valid_until: datetime | None
    device_id_pattern: str | None
    reprovision: ReprovisionPolicy | None = None


class EnrollmentOperations(Operations):
    def search(
        self,
        principal: Principal,
        *,
        mechanism: Mechanism | None = None,
        owner: str | None = None,
        limit: int = 100,
    ) -> Sequence[Enrollment]:
        """Enrollments the principal sees, by id."""
        return self._rt.enrollments.search(
            mechanism=mechanism, owner=owner, limit=limit, owners=scope_of(self._rt, principal)
        )

    def show(self, principal: Principal, enrollment_id: str) -> Enrollment:
        """One enrollment (its secrets are for the caller not to show).

        Raises:
            NotFound: no such enrollment, or a foreign one.
        """
        return visible_enrollment(self._rt, principal, enrollment_id, Role.VIEWER)

    def create(self, principal: Principal, spec: EnrollmentSpec) -> Enrollment:
        """Create an enrollment, generating what the spec asks to be generated.

        Raises:
            NotFound, PermissionDenied: the owner organization is not visible, or the
                principal is not an admin there.
            InvalidValue: a field is not acceptable.
            Conflict: the id is taken.
        """
        with self._transaction():
            what = f"organization {spec.owner!r}"
            authorize(principal, spec.owner, Role.ADMIN, self._rt.org_tree(), what=what)
            enrollment = create_enrollment(
                self._rt.enrollments, enrollment_from(spec, at=self._now())
            )
            self._audit(
                principal,
                "enrollment.create",
                "enrollment",
                enrollment.id,
                org_id=enrollment.owner,
            )
        # Committed: the TLS gate may now admit its manufacturer chain.
        self._rt.enrollment_added(enrollment)
        return enrollment

    def update(self, principal: Principal, enrollment_id: str, edit: EnrollmentEdit) -> Enrollment:
        """Change an enrollment's admission settings.

        Raises:
            NotFound, PermissionDenied: not visible, or the principal is not an admin.
            InvalidValue: the changed enrollment is not acceptable.
        """
        with self._transaction():
            current = visible_enrollment(self._rt, principal, enrollment_id, Role.ADMIN)
            changed = dataclasses.replace(
                current,
                manual_approval=edit.manual_approval,
                quota=edit.quota,
                validity_days=edit.validity_days,
                renewal_grace_days=edit.renewal_grace_days,
                valid_from=edit.valid_from,
                valid_until=edit.valid_until,
                device_id_pattern=edit.device_id_pattern,
                reprovision=edit.reprovision or current.reprovision,
                updated_at=self._now().replace(microsecond=0),
            )
            validate_enrollment(changed)
            self._rt.enrollments.replace(changed)
            self._audit(
                principal, "enrollment.update", "enrollment", enrollment_id, org_id=changed.owner
            )
        return changed

    def disable(self, principal: Principal, enrollment_id: str) -> Enrollment:
        """Stop admitting devices through this enrollment."""
        return self._set_enabled(principal, enrollment_id, enabled=False)

    def enable(self, principal: Principal, enrollment_id: str) -> Enrollment:
        """Admit devices again."""
        return self._set_enabled(principal, enrollment_id, enabled=True)

    def _set_enabled(
        self, principal: Principal, enrollment_id: str, *, enabled: bool
    ) -> Enrollment:
        action = "enrollment.enable" if enabled else "enrollment.disable"
        with self._transaction():
            visible_enrollment(self._rt, principal, enrollment_id, Role.OPERATOR)
            changed = set_enabled(
                self._rt.enrollments, enrollment_id, enabled=enabled, at=self._now()
            )
            self._audit(principal, action, "enrollment", enrollment_id, org_id=changed.owner)
        return changed

    def delete(self, principal: Principal, enrollment_id: str) -> Enrollment:
        """Delete an enrollment (devices already provisioned keep their certificates).

        Raises:
            NotFound, PermissionDenied: not visible, or the principal is not an admin.
        """
        with self._transaction():
            enrollment = visible_enrollment(self._rt, principal, enrollment_id, Role.ADMIN)
            self._rt.enrollments.remove(enrollment_id)
            self._audit(
                principal, "enrollment.delete", "enrollment", enrollment_id, org_id=enrollment.owner
            )
        return enrollment
