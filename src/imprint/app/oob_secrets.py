"""Out-of-band secret operations: register one or many, list, remove.

Scoped by the enrollment's organization: operators register and remove secrets, viewers
list them (never the secret). The enrollment must be an ``oob-secret`` one. A bulk import
is all or nothing (see :mod:`imprint.provisioning.oob_secrets`): its rows are read as
they are checked, and written, with one audit entry for the whole import, in one
transaction.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from imprint.app.base import Operations, Page
from imprint.app.scoping import visible_enrollment
from imprint.errors import InvalidValue
from imprint.provisioning.enrollments import Enrollment
from imprint.provisioning.one_time_passwords import (
    MAX_VALIDITY,
    OneTimePassword,
    new_one_time_password,
)
from imprint.provisioning.oob_secrets import (
    ImportReport,
    OobSecretSummary,
    Progress,
    RawRow,
    RegistrationResult,
    register_secret,
    register_secrets,
    secret_enrollment,
)
from imprint.store.listing import Order
from imprint.tenancy.access import Principal
from imprint.tenancy.roles import Role

__all__ = ["OobSecretOperations"]

_DEVICE_ID = re.compile(r"[\x21-\x7e]{1,200}")


class OobSecretOperations(Operations):
    def _enrollment(self, principal: Principal, enrollment_id: str, needed: Role) -> Enrollment:
        """The oob-secret enrollment, as the principal may see it.

        Raises:
            NotFound, PermissionDenied: not visible, or the role is too low.
            WrongMechanism: not an oob-secret enrollment.
        """
        visible_enrollment(self._rt, principal, enrollment_id, needed)
        return secret_enrollment(self._rt.enrollments, enrollment_id)

    def list(
        self,
        principal: Principal,
        enrollment_id: str,
        *,
        limit: int = 100,
        after: str | None = None,
    ) -> Sequence[OobSecretSummary]:
        """Registered secrets by device id (``after``: the last one of the previous page),
        never the secrets themselves."""
        self._enrollment(principal, enrollment_id, Role.VIEWER)
        return self._rt.oob_secrets.search(enrollment_id, limit=limit, after=after)

    def page(
        self,
        principal: Principal,
        enrollment_id: str,
        *,
        limit: int = 100,
        after: str | None = None,
        text: str | None = None,
        order: Order | None = None,
        offset: int = 0,
    ) -> Page[OobSecretSummary]:
        """One page of :meth:`list`, with how many secrets match in all and the next
        page's cursor. ``text`` matches the device id; ``order``/``offset`` page a sorted
        list (the cursor then is only meaningful for the default order, by device id)."""
        self._enrollment(principal, enrollment_id, Role.VIEWER)
        found = self._rt.oob_secrets.search(
            enrollment_id, limit=limit + 1, after=after, text=text, order=order, offset=offset
        )
        items = found[:limit]
        following = items[-1].device_id if len(found) > limit else None
        total = self._rt.oob_secrets.count(enrollment_id, text=text)
        return Page(items, total, following)

    def create_one_time_password(
        self,
        principal: Principal,
        enrollment_id: str,
        device_id: str,
        valid_for: timedelta = timedelta(hours=24),
    ) -> tuple[str, OneTimePassword]:
        """A one-time password for one device of an oob-secret enrollment (EST's HTTP
        Basic): the password, shown this once, and its record (only its hash is kept).

        Raises:
            InvalidValue: a bad device id or validity.
            NotFound, PermissionDenied, WrongMechanism: as :meth:`register`.
        """
        if not _DEVICE_ID.fullmatch(device_id):
            raise InvalidValue("device_id: 1 to 200 printable ASCII characters, no spaces")
        if not timedelta(minutes=1) <= valid_for <= MAX_VALIDITY:
            raise InvalidValue("valid for one minute to thirty days")
        with self._transaction():
            enrollment = self._enrollment(principal, enrollment_id, Role.OPERATOR)
            password, record = new_one_time_password(
                enrollment.id,
                device_id,
                at=self._rt.clock.now().replace(microsecond=0),
                valid_for=valid_for,
                created_by=principal.actor,
            )
            self._rt.one_time_passwords.add(record)
            self._audit(
                principal,
                "one_time_password.create",
                "device",
                device_id,
                org_id=enrollment.owner,
                enrollment_id=enrollment.id,
                password_id=record.id,
                expires_at=record.expires_at.isoformat(),
            )
        return password, record

    def register(
        self,
        principal: Principal,
        enrollment_id: str,
        device_id: str,
        secret: str,
        valid_until: datetime | str | None = None,
    ) -> tuple[RegistrationResult, OobSecretSummary]:
        """Register one device's secret (idempotent).

        Raises:
            InvalidValue: the device id, secret or expiry is not acceptable.
        """
        with self._transaction():
            enrollment = self._enrollment(principal, enrollment_id, Role.OPERATOR)
            result, summary = register_secret(
                self._rt.oob_secrets, enrollment, device_id, secret, valid_until, now=self._now()
            )
            self._audit(
                principal,
                "oob_secret.register",
                "device",
                device_id,
                org_id=enrollment.owner,
                enrollment_id=enrollment_id,
                result=result.value,
            )
        return result, summary

    def import_secrets(
        self,
        principal: Principal,
        enrollment_id: str,
        rows: Iterable[RawRow],
        *,
        dry_run: bool = False,
        skip_invalid: bool = False,
        progress: Progress | None = None,
    ) -> ImportReport:
        """Register many secrets, all or nothing; a dry run writes nothing (nor audits).
        With ``skip_invalid`` the valid rows are written and the invalid ones reported.

        ``rows`` (from :func:`~imprint.provisioning.oob_secrets.parse_csv` or
        :func:`~imprint.provisioning.oob_secrets.parse_json`) are read once, as they are
        checked.

        Raises:
            RowsInvalid: some row is invalid (not in a dry run); nothing was written. Its
                ``report`` names each bad row.
            Conflict: a concurrent registration wrote one of these devices first.
        """
        with self._transaction():
            enrollment = self._enrollment(principal, enrollment_id, Role.OPERATOR)
            report = register_secrets(
                self._rt.oob_secrets,
                enrollment,
                rows,
                dry_run=dry_run,
                skip_invalid=skip_invalid,
                now=self._now(),
                progress=progress,
            )
            if not report.dry_run:
                details: dict[str, Any] = {
                    "written": report.written,
                    "rows": report.rows,
                    "created": report.created,
                    "updated": report.updated,
                    "unchanged": report.unchanged,
                }
                if report.problems:  # skip_invalid: the rows left out
                    details["invalid"] = len(report.problems)
                self._audit(
                    principal,
                    "oob_secret.import",
                    "enrollment",
                    enrollment_id,
                    org_id=enrollment.owner,
                    **details,
                )
        return report

    def remove(self, principal: Principal, enrollment_id: str, device_id: str) -> None:
        """Remove a device's secret; the device waits again until a new one is registered.

        Raises:
            NotFound: no secret for this device (or no visible enrollment).
        """
        with self._transaction():
            enrollment = self._enrollment(principal, enrollment_id, Role.OPERATOR)
            self._rt.oob_secrets.remove(enrollment_id, device_id)
            self._audit(
                principal,
                "oob_secret.remove",
                "device",
                device_id,
                org_id=enrollment.owner,
                enrollment_id=enrollment_id,
            )
