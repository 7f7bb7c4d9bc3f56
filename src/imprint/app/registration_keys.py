"""Registration-key operations: an enrollment's key, created, rotated and shown.

Admins of the enrollment's organization create and rotate its key (the whole key is
returned once, never written to the audit log); viewers see the first halves. A foreign
enrollment is "not found".
"""

from __future__ import annotations

from collections.abc import Sequence

from imprint.app.base import Operations
from imprint.app.scoping import visible_enrollment
from imprint.durations import parse_duration
from imprint.provisioning.registration_keys import (
    DEFAULT_HALF_LENGTH,
    DEFAULT_TRANSITION,
    RegistrationKey,
    Rotation,
    create_registration_key,
    rotate_registration_key,
)
from imprint.tenancy.access import Principal
from imprint.tenancy.roles import Role

__all__ = ["RegistrationKeyOperations"]


class RegistrationKeyOperations(Operations):
    def show(self, principal: Principal, enrollment_id: str) -> Sequence[RegistrationKey]:
        """The enrollment's keys, current first (callers show first halves only).

        Raises:
            NotFound: no such enrollment, or a foreign one.
        """
        visible_enrollment(self._rt, principal, enrollment_id, Role.VIEWER)
        return self._rt.registration_keys.for_enrollment(enrollment_id)

    def create(
        self,
        principal: Principal,
        enrollment_id: str,
        *,
        key: str | None = None,
        half_length: int = DEFAULT_HALF_LENGTH,
    ) -> RegistrationKey:
        """Give the enrollment its first key: ``key`` (e.g. one moved from midPoint), or a
        generated one with halves of ``half_length``.

        Raises:
            NotFound, PermissionDenied: not visible, or the role is too low.
            Conflict: it has a key already (rotate it), or it is not registration-key.
            InvalidValue: a bad key or half length.
        """
        with self._transaction():
            enrollment = visible_enrollment(self._rt, principal, enrollment_id, Role.ADMIN)
            made = create_registration_key(
                self._rt.registration_keys,
                self._rt.enrollments,
                enrollment_id,
                at=self._now(),
                key=key,
                half_length=half_length,
            )
            self._audit(
                principal,
                "registration_key.create",
                "enrollment",
                enrollment_id,
                org_id=enrollment.owner,
            )
        return made

    def rotate(
        self,
        principal: Principal,
        enrollment_id: str,
        *,
        transition: str | None = None,
        key: str | None = None,
        half_length: int = DEFAULT_HALF_LENGTH,
        require_current: bool | None = None,
    ) -> Rotation:
        """Give the enrollment a new current key; the replaced one keeps working for
        ``transition`` (a duration such as ``7d``, ``12h`` or ``0s``; default 7 days).

        ``require_current``: True refuses an enrollment without a key yet; None (the API
        and the console) creates the first key or rotates.

        Raises:
            NotFound, PermissionDenied: not visible, or the role is too low; True and no
                key yet.
            Conflict: not registration-key, the first half is in use, or a concurrent
                rotation.
            InvalidValue: a bad key, half length or transition.
        """
        with self._transaction():
            enrollment = visible_enrollment(self._rt, principal, enrollment_id, Role.ADMIN)
            rotation = rotate_registration_key(
                self._rt.registration_keys,
                self._rt.enrollments,
                enrollment_id,
                at=self._now(),
                transition=DEFAULT_TRANSITION if transition is None else parse_duration(transition),
                key=key,
                half_length=half_length,
                require_current=require_current,
            )
            self._audit(
                principal,
                "registration_key.rotate",
                "enrollment",
                enrollment_id,
                org_id=enrollment.owner,
            )
        return rotation
