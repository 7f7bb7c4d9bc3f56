"""Out-of-band (OOB) secrets: what an administrator registers for each device.

A device of an ``oob-secret`` enrollment proves who it is with a secret that reached
the server another way (a label, a QR code, an NFC tag read at installation). The
administrator registers ``device id + secret`` per device, singly or in bulk; the
secret is sealed at rest (the server needs it back to compute HMACs), valid for a
limited time (three days unless told otherwise) and good for one provisioning.

Registration is idempotent, row by row:

- a new device id is *created*;
- the same device id with the same secret (and no other ``valid_until``) is
  *unchanged*, whether or not the secret was used;
- the same secret with another explicit ``valid_until`` only moves the expiry
  (*updated*);
- another secret replaces the stored one, unused again, with a fresh validity
  (*updated*).

A bulk registration is all or nothing: every row is checked first, and if any row is
invalid, nothing is written and each bad row is reported with its line number.
"""

from __future__ import annotations

import csv
import hmac
import io
import json
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from imprint.errors import InvalidRequest, InvalidValue, NotFound
from imprint.provisioning.enrollments import (
    Enrollment,
    EnrollmentKind,
    EnrollmentStore,
    Mechanism,
)

__all__ = [
    "DEFAULT_VALIDITY",
    "MAX_VALIDITY",
    "ImportReport",
    "OobSecret",
    "OobSecretStore",
    "OobSecretSummary",
    "RawRow",
    "RegistrationResult",
    "RowProblem",
    "RowsInvalid",
    "parse_csv",
    "parse_json",
    "register_secret",
    "register_secrets",
    "secret_enrollment",
]

DEFAULT_VALIDITY = timedelta(days=3)
MAX_VALIDITY = timedelta(days=365)
MIN_SECRET_LENGTH = 8
MAX_SECRET_LENGTH = 256
_DEVICE_ID = re.compile(r"[\x21-\x7e]{1,200}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_FIELDS = ("device_id", "secret", "valid_until")
CHUNK = 1000

Progress = Callable[[str, int, int], None]
"""``progress(phase, done, total)``; phases are ``check`` and ``write``."""


@dataclass(frozen=True, slots=True)
class OobSecret:
    """A registered secret, opened: only the attestor and registration need this."""

    enrollment_id: str
    device_id: str
    secret: str = field(repr=False)
    valid_until: datetime
    created_at: datetime
    used_at: datetime | None = None

    def expired(self, at: datetime) -> bool:
        return at >= self.valid_until


@dataclass(frozen=True, slots=True)
class OobSecretSummary:
    """A registered secret as an administrator sees it: never the secret itself."""

    enrollment_id: str
    device_id: str
    valid_until: datetime
    created_at: datetime
    used_at: datetime | None = None


class OobSecretStore(Protocol):
    def get(self, enrollment_id: str, device_id: str) -> OobSecret | None: ...

    def for_device(
        self, device_id: str, enrollment_ids: Collection[str] | None = None
    ) -> list[OobSecret]:
        """The secrets of ``device_id`` (in any of these enrollments), by enrollment id."""

    def existing(self, enrollment_id: str, device_ids: Sequence[str]) -> dict[str, OobSecret]:
        """The secrets of these devices in one enrollment, by device id."""

    def write(
        self,
        inserts: Sequence[OobSecret],
        updates: Sequence[OobSecret],
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Insert and update in one transaction; ``progress(rows)`` after each batch.

        Raises:
            Conflict: a concurrent registration inserted one of these rows first.
        """

    def mark_used(self, enrollment_id: str, device_id: str, at: datetime) -> bool:
        """Set ``used_at`` unless set already; False when nothing changed."""

    def search(
        self, enrollment_id: str, *, limit: int = 100, after: str | None = None
    ) -> list[OobSecretSummary]: ...

    def remove(self, enrollment_id: str, device_id: str) -> None:
        """Raises NotFound when there is no such secret."""


class RegistrationResult(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class RawRow:
    """One row as read: ``line`` is the CSV file line, or the 1-based JSON item number."""

    line: int
    values: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class RowProblem:
    line: int
    message: str
    field: str | None = None
    device_id: str | None = None


@dataclass(frozen=True, slots=True)
class _Entry:
    line: int
    device_id: str
    secret: str = field(repr=False)
    valid_until: datetime | None


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What a registration did (or, in a dry run, would do)."""

    enrollment_id: str
    rows: int
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    problems: tuple[RowProblem, ...] = ()
    dry_run: bool = False
    written: bool = False


class RowsInvalid(InvalidRequest):
    """At least one row is invalid; nothing was written."""

    code = "oob_rows_invalid"

    def __init__(self, report: ImportReport) -> None:
        count = len(report.problems)
        super().__init__(
            f"{count} of {report.rows} row(s) are invalid; nothing was written",
        )
        self.report = report


class WrongMechanism(InvalidRequest):
    code = "enrollment_mechanism_mismatch"


def secret_enrollment(enrollments: EnrollmentStore, enrollment_id: str) -> Enrollment:
    """The enrollment OOB secrets are registered for.

    Raises:
        NotFound: no such enrollment.
        WrongMechanism: it is not an oob-secret enrollment.
    """
    enrollment = enrollments.get(enrollment_id)
    if enrollment.mechanism is not Mechanism.OOB_SECRET:
        raise WrongMechanism(
            f"enrollment {enrollment_id!r} uses {enrollment.mechanism.value}, not oob-secret"
        )
    return enrollment


def parse_csv(source: str | Iterable[str]) -> Iterator[RawRow]:
    """Rows of a CSV file with the header ``device_id,secret[,valid_until]``.

    ``source`` is the whole text, or its lines as they are read (a file opened with
    ``newline=""``), so a large file is never held whole.

    Raises:
        InvalidValue: no header, or a header with other columns.
    """
    reader = csv.reader(io.StringIO(source, newline="") if isinstance(source, str) else source)
    header = next(reader, None)
    if header is None:
        raise InvalidValue("the CSV file is empty; it needs a device_id,secret header")
    columns = [name.strip() for name in header]
    unknown = [c for c in columns if c not in _FIELDS]
    if unknown or "device_id" not in columns or "secret" not in columns:
        raise InvalidValue(
            "the CSV header must be device_id,secret with an optional valid_until column"
        )
    if len(set(columns)) != len(columns):
        raise InvalidValue("the CSV header names a column twice")
    for cells in reader:
        line = reader.line_num
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            continue
        if len(cells) != len(columns):
            yield RawRow(line, {"__cells__": len(cells), "__columns__": len(columns)})
            continue
        yield RawRow(line, dict(zip(columns, cells, strict=True)))


def parse_json(data: object) -> list[RawRow]:
    """Rows of a JSON list of ``{"device_id", "secret", "valid_until"?}`` objects.

    Raises:
        InvalidValue: the document is not a list.
    """
    if isinstance(data, str | bytes):
        try:
            data = json.loads(data)
        except ValueError:
            raise InvalidValue("not valid JSON") from None
    if not isinstance(data, list):
        raise InvalidValue("a JSON list of {device_id, secret, valid_until?} objects is needed")
    return [
        RawRow(index, item if isinstance(item, Mapping) else {"__not_object__": True})
        for index, item in enumerate(data, start=1)
    ]


def _parse_time(value: object, now: datetime) -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise InvalidValue("an ISO 8601 date and time, e.g. 2030-01-31T12:00:00Z") from None
    else:
        raise InvalidValue("an ISO 8601 date and time, e.g. 2030-01-31T12:00:00Z")
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    if moment <= now:
        raise InvalidValue("must be in the future")
    if moment > now + MAX_VALIDITY:
        raise InvalidValue(f"at most {MAX_VALIDITY.days} days ahead")
    return moment


def _check(row: RawRow, enrollment: Enrollment, now: datetime) -> _Entry | RowProblem:
    values = row.values
    if "__not_object__" in values:
        return RowProblem(row.line, "each item must be an object")
    if "__cells__" in values:
        return RowProblem(
            row.line, f"{values['__cells__']} cells where the header has {values['__columns__']}"
        )
    unknown = sorted(str(k) for k in values if k not in _FIELDS)
    if unknown:
        return RowProblem(row.line, f"unknown field(s): {', '.join(unknown)}")
    device_id = values.get("device_id")
    if not isinstance(device_id, str) or not _DEVICE_ID.fullmatch(device_id):
        return RowProblem(
            row.line, "1 to 200 printable ASCII characters, no spaces", field="device_id"
        )
    secret = values.get("secret")
    problem = _secret_problem(secret)
    if problem is not None:
        return RowProblem(row.line, problem, field="secret", device_id=device_id)
    assert isinstance(secret, str)
    if enrollment.kind is EnrollmentKind.INDIVIDUAL and device_id != enrollment.registration_id:
        return RowProblem(
            row.line,
            "this individual enrollment admits only its own registration id",
            field="device_id",
            device_id=device_id,
        )
    raw_until = values.get("valid_until")
    valid_until = None
    if raw_until not in (None, ""):
        try:
            valid_until = _parse_time(raw_until, now)
        except InvalidValue as exc:
            return RowProblem(row.line, exc.message, field="valid_until", device_id=device_id)
    return _Entry(row.line, device_id, secret, valid_until)


def _secret_problem(secret: object) -> str | None:
    if not isinstance(secret, str):
        return "a string is required"
    if not MIN_SECRET_LENGTH <= len(secret) <= MAX_SECRET_LENGTH:
        return f"{MIN_SECRET_LENGTH} to {MAX_SECRET_LENGTH} characters"
    if _CONTROL.search(secret):
        return "control characters are not allowed"
    if secret != secret.strip():
        return "leading or trailing whitespace is not allowed"
    return None


def _validate(
    rows: Iterable[RawRow], enrollment: Enrollment, now: datetime
) -> tuple[list[_Entry], list[RowProblem], int]:
    entries: list[_Entry] = []
    problems: list[RowProblem] = []
    first_line: dict[str, int] = {}
    count = 0
    for row in rows:
        count += 1
        checked = _check(row, enrollment, now)
        if isinstance(checked, RowProblem):
            problems.append(checked)
            continue
        seen = first_line.setdefault(checked.device_id, checked.line)
        if seen != checked.line:
            problems.append(
                RowProblem(
                    checked.line,
                    f"device id already on line {seen}",
                    field="device_id",
                    device_id=checked.device_id,
                )
            )
            continue
        entries.append(checked)
    return entries, problems, count


def _plan(
    store: OobSecretStore,
    enrollment: Enrollment,
    entries: Sequence[_Entry],
    now: datetime,
    progress: Progress | None,
) -> tuple[list[OobSecret], list[OobSecret], int]:
    inserts: list[OobSecret] = []
    updates: list[OobSecret] = []
    unchanged = 0
    for start in range(0, len(entries), CHUNK):
        chunk = entries[start : start + CHUNK]
        current = store.existing(enrollment.id, [e.device_id for e in chunk])
        for entry in chunk:
            before = current.get(entry.device_id)
            if before is None:
                inserts.append(
                    OobSecret(
                        enrollment_id=enrollment.id,
                        device_id=entry.device_id,
                        secret=entry.secret,
                        valid_until=entry.valid_until or now + DEFAULT_VALIDITY,
                        created_at=now,
                    )
                )
            elif hmac.compare_digest(before.secret.encode(), entry.secret.encode()):
                if entry.valid_until is None or entry.valid_until == before.valid_until:
                    unchanged += 1
                else:
                    updates.append(_with_expiry(before, entry.valid_until))
            else:
                updates.append(
                    OobSecret(
                        enrollment_id=enrollment.id,
                        device_id=entry.device_id,
                        secret=entry.secret,
                        valid_until=entry.valid_until or now + DEFAULT_VALIDITY,
                        created_at=now,
                    )
                )
        if progress is not None:
            progress("check", min(start + CHUNK, len(entries)), len(entries))
    return inserts, updates, unchanged


def _with_expiry(secret: OobSecret, valid_until: datetime) -> OobSecret:
    return OobSecret(
        enrollment_id=secret.enrollment_id,
        device_id=secret.device_id,
        secret=secret.secret,
        valid_until=valid_until,
        created_at=secret.created_at,
        used_at=secret.used_at,
    )


def register_secrets(
    store: OobSecretStore,
    enrollment: Enrollment,
    rows: Iterable[RawRow],
    *,
    dry_run: bool = False,
    skip_invalid: bool = False,
    now: datetime,
    progress: Progress | None = None,
) -> ImportReport:
    """Register many secrets, all or nothing (or, with ``skip_invalid``, the valid rows).

    Args:
        store: where secrets live.
        enrollment: an oob-secret enrollment (see :func:`secret_enrollment`).
        rows: from :func:`parse_csv` or :func:`parse_json`.
        dry_run: count what would change, write nothing.
        skip_invalid: write the valid rows and report the invalid ones in ``problems``
            instead of writing nothing.
        now: the registration time (the runtime clock's).
        progress: called as rows are checked and written.

    Returns:
        The counts; in a dry run or with ``skip_invalid``, ``problems`` lists the invalid
        rows instead of raising.

    Raises:
        RowsInvalid: some row is invalid (not in a dry run, without ``skip_invalid``);
            nothing was written.
        Conflict: a concurrent registration wrote one of these devices first.
    """
    entries, problems, count = _validate(rows, enrollment, now)
    if problems and not dry_run and not skip_invalid:
        raise RowsInvalid(ImportReport(enrollment.id, count, problems=tuple(problems)))
    inserts, updates, unchanged = _plan(store, enrollment, entries, now, progress)
    del entries  # the planned rows hold what is still needed (a million rows: ~100 MB)
    report = ImportReport(
        enrollment_id=enrollment.id,
        rows=count,
        created=len(inserts),
        updated=len(updates),
        unchanged=unchanged,
        problems=tuple(problems),
        dry_run=dry_run,
    )
    if dry_run or not (inserts or updates):
        return report
    total = len(inserts) + len(updates)
    written = 0

    def advance(rows_done: int) -> None:
        nonlocal written
        written += rows_done
        if progress is not None:
            progress("write", written, total)

    store.write(inserts, updates, advance)
    return ImportReport(
        enrollment_id=report.enrollment_id,
        rows=report.rows,
        created=report.created,
        updated=report.updated,
        unchanged=report.unchanged,
        problems=report.problems,
        dry_run=False,
        written=True,
    )


def register_secret(
    store: OobSecretStore,
    enrollment: Enrollment,
    device_id: str,
    secret: str,
    valid_until: datetime | str | None = None,
    *,
    now: datetime,
) -> tuple[RegistrationResult, OobSecretSummary]:
    """Register one device's secret (same rules as a one-row bulk registration).

    Raises:
        InvalidValue: the device id, secret or expiry is not acceptable.
    """
    row = RawRow(1, {"device_id": device_id, "secret": secret, "valid_until": valid_until})
    checked = _check(row, enrollment, now)
    if isinstance(checked, RowProblem):
        raise InvalidValue(f"{checked.field or 'row'}: {checked.message}")
    report = register_secrets(store, enrollment, [row], now=now)
    result = (
        RegistrationResult.CREATED
        if report.created
        else RegistrationResult.UPDATED
        if report.updated
        else RegistrationResult.UNCHANGED
    )
    stored = store.get(enrollment.id, device_id)
    if stored is None:  # removed by someone else in between
        raise NotFound(f"the secret of {device_id!r} disappeared during registration")
    return result, OobSecretSummary(
        enrollment_id=stored.enrollment_id,
        device_id=stored.device_id,
        valid_until=stored.valid_until,
        created_at=stored.created_at,
        used_at=stored.used_at,
    )
