"""Enrollment operations: who may provision, and what they get, for every admin surface.

Viewers read; operators enable and disable; admins of the owner organization create,
edit and delete. Generated secrets (pre-shared key, group key) are on the enrollment
:meth:`EnrollmentOperations.create` returns, for its caller to show once.
"""

from __future__ import annotations

from collections.abc import Sequence

from imprint.app.base import Operations, Page
from imprint.app.scoping import scope_of, visible_enrollment
from imprint.errors import NotFound
from imprint.provisioning.enrollments import (
    Enrollment,
    Mechanism,
    create_enrollment,
    set_enabled,
    validate_enrollment,
)
from imprint.provisioning.specs import (
    EnrollmentPatch,
    EnrollmentSpec,
    PatchedEnrollment,
    apply_patch,
    enrollment_from,
)
from imprint.tenancy.access import Principal, authorize
from imprint.tenancy.roles import Role

__all__ = ["EnrollmentOperations"]


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

    def page(
        self,
        principal: Principal,
        *,
        mechanism: Mechanism | None = None,
        owner: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> Page[Enrollment]:
        """One page of the enrollments the principal sees, by id, with the total that
        match and the cursor of the next page."""
        owners = scope_of(self._rt, principal)
        found = self._rt.enrollments.search(
            mechanism=mechanism, owner=owner, limit=limit + 1, owners=owners, after=after
        )
        total = self._rt.enrollments.count(mechanism=mechanism, owner=owner, owners=owners)
        items = list(found[:limit])
        return Page(items, total, items[-1].id if len(found) > limit else None)

    def show(self, principal: Principal, enrollment_id: str) -> Enrollment:
        """One enrollment (its secrets are for the caller not to show).

        Raises:
            NotFound: no such enrollment, or a foreign one.
        """
        return visible_enrollment(self._rt, principal, enrollment_id, Role.VIEWER)

    def create(self, principal: Principal, spec: EnrollmentSpec) -> Enrollment:
        """Create an enrollment, generating what the spec asks to be generated.

        Raises:
            NotFound, PermissionDenied: the owner organization does not exist or is not
                visible, or the principal is not an admin there.
            InvalidValue: a field is not acceptable.
            Conflict: the id is taken.
        """
        with self._transaction():
            what = f"organization {spec.owner!r}"
            tree = self._rt.org_tree()
            authorize(principal, spec.owner, Role.ADMIN, tree, what=what)
            if spec.owner not in tree:  # an instance admin passes authorize for any id
                raise NotFound(
                    f"no {what}: create it first (POST /api/v1/orgs, or imprint org create)"
                )
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

    def update(
        self, principal: Principal, enrollment_id: str, patch: EnrollmentPatch
    ) -> PatchedEnrollment:
        """Change what can change safely on an enrollment: the fields the patch gives.

        Devices already provisioned keep their certificates and channels; the change
        applies to what happens next (new devices, renewals, re-provisioning). The audit
        entry names the changed fields, never their secret values.

        Raises:
            NotFound, PermissionDenied: not visible, or the principal is not an admin.
            UnsafeChange: a field that cannot change (id, kind, mechanism, owner, ...),
                with the reason.
            InvalidValue: the changed enrollment is not acceptable.
        """
        with self._transaction():
            current = visible_enrollment(self._rt, principal, enrollment_id, Role.ADMIN)
            patched = apply_patch(current, patch, at=self._now())
            validate_enrollment(patched.enrollment)
            if patched.changed:
                self._rt.enrollments.replace(patched.enrollment)
            self._audit(
                principal,
                "enrollment.update",
                "enrollment",
                enrollment_id,
                org_id=current.owner,
                changed=list(patched.changed),
            )
        return patched

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
