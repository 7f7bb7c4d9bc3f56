"""Read-only queries of the console's overview pages, scoped like the admin API.

``owners`` is :func:`~imprint.app.scoping.scope_of`: the organization ids the user
sees, or None for the whole instance.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.engine import Engine

from imprint.pki.records import CertificateStatus
from imprint.provisioning.devices import DeviceStatus
from imprint.store.listing import Order, SortKeys, contains
from imprint.store.tables import (
    certificates,
    devices,
    enrollments,
    oob_secrets,
    provisioning_records,
    users,
)

__all__ = [
    "DEVICE_SORT",
    "DayCount",
    "DeviceFilter",
    "DeviceRow",
    "Failure",
    "attempts_per_day",
    "device_counts",
    "device_names",
    "each_device",
    "expiring_counts",
    "recent_failures",
    "search_devices",
    "user_names",
]

EXPIRY_WINDOWS = (7, 30, 90)


def _scoped(query: Select[Any], column: Any, owners: Collection[str] | None) -> Select[Any]:
    return query if owners is None else query.where(column.in_(sorted(owners)))


def device_counts(
    engine: Engine, owners: Collection[str] | None
) -> tuple[dict[str, int], dict[str, int]]:
    """(devices per status, devices per organization); reset devices are not counted."""
    live = devices.c.status != DeviceStatus.RESET.value
    by_status = _scoped(
        select(devices.c.status, func.count()).group_by(devices.c.status), devices.c.owner, owners
    )
    by_org = _scoped(
        select(devices.c.owner, func.count()).where(live).group_by(devices.c.owner),
        devices.c.owner,
        owners,
    )
    with engine.connect() as conn:
        statuses = {str(s): int(n) for s, n in conn.execute(by_status)}
        orgs = {str(o): int(n) for o, n in conn.execute(by_org)}
    return statuses, dict(sorted(orgs.items()))


def expiring_counts(
    engine: Engine, owners: Collection[str] | None, now: datetime
) -> dict[int, int]:
    """Issued certificates that expire within 7, 30 and 90 days (each window counts all
    that end before it)."""
    answer: dict[int, int] = {}
    with engine.connect() as conn:
        for days in EXPIRY_WINDOWS:
            query = select(func.count()).where(
                certificates.c.status == CertificateStatus.ISSUED.value,
                certificates.c.not_after > now,
                certificates.c.not_after <= now + timedelta(days=days),
            )
            answer[days] = int(
                conn.execute(_scoped(query, certificates.c.owner, owners)).scalar_one()
            )
    return answer


def _records_in(owners: Collection[str] | None, query: Select[Any]) -> Select[Any]:
    """Provisioning records of ``owners``: those of their enrollments or devices, and
    failures before an enrollment was known (a wrong OOB secret) for a device id one of
    their enrollments registered a secret for. Failures nothing ties to an organization
    (an unknown manufacturer CA) are the instance's: only an instance admin sees them."""
    if owners is None:
        return query
    records = provisioning_records.c
    mine = select(enrollments.c.id).where(enrollments.c.owner.in_(sorted(owners)))
    registered = select(oob_secrets.c.device_id).where(oob_secrets.c.enrollment_id.in_(mine))
    owned_devices = select(devices.c.id).where(devices.c.owner.in_(sorted(owners)))
    return query.where(
        or_(
            records.enrollment_id.in_(mine),
            records.device_ref.in_(owned_devices),
            and_(
                records.enrollment_id.is_(None),
                records.mechanism == "oob-secret",
                records.registration_id.in_(registered),
            ),
        )
    )


@dataclass(frozen=True, slots=True)
class DayCount:
    day: date
    ok: int
    failed: int


def attempts_per_day(
    engine: Engine, owners: Collection[str] | None, now: datetime, days: int = 14
) -> list[DayCount]:
    """Provisioning attempts (one per request) per UTC day, succeeded and failed; an
    attempt with any failed step counts as failed."""
    start = datetime.combine((now - timedelta(days=days - 1)).date(), datetime.min.time(), UTC)
    query = _records_in(
        owners,
        select(
            provisioning_records.c.request_id,
            provisioning_records.c.at,
            provisioning_records.c.status,
        )
        .where(provisioning_records.c.at >= start)
        .limit(100_000),
    )
    first: dict[str, date] = {}
    failed: set[str] = set()
    with engine.connect() as conn:
        for request_id, at, status in conn.execute(query):
            day = at.astimezone(UTC).date()
            if request_id not in first or day < first[request_id]:
                first[request_id] = day
            if status == "failed":
                failed.add(request_id)
    ok_count = Counter(d for r, d in first.items() if r not in failed)
    failed_count = Counter(d for r, d in first.items() if r in failed)
    return [
        DayCount(day, ok_count[day], failed_count[day])
        for day in (start.date() + timedelta(days=i) for i in range(days))
    ]


@dataclass(frozen=True, slots=True)
class Failure:
    at: datetime
    mechanism: str
    step: str
    code: str | None
    detail: str | None
    enrollment_id: str | None
    registration_id: str | None
    device_ref: str | None


def recent_failures(
    engine: Engine, owners: Collection[str] | None, limit: int = 10
) -> list[Failure]:
    """The latest failed provisioning steps (scoped as :func:`_records_in` says)."""
    records = provisioning_records.c
    query = _records_in(
        owners,
        select(provisioning_records)
        .where(records.status == "failed")
        .order_by(records.at.desc(), records.id)
        .limit(limit),
    )
    with engine.connect() as conn:
        return [
            Failure(
                at=row["at"],
                mechanism=row["mechanism"],
                step=row["step"],
                code=row["code"],
                detail=row["detail"],
                enrollment_id=row["enrollment_id"],
                registration_id=row["registration_id"],
                device_ref=row["device_ref"],
            )
            for row in conn.execute(query).mappings()
        ]


@dataclass(frozen=True, slots=True)
class DeviceRow:
    id: str
    device_id: str
    owner: str
    enrollment_id: str
    mechanism: str
    status: str
    certificate_serial: str | None
    certificate_status: str | None
    not_after: datetime | None
    updated_at: datetime


EXPIRY_FILTERS = {"7": 7, "30": 30, "90": 90}


@dataclass(frozen=True, slots=True)
class DeviceFilter:
    """The device list's filters (None: any)."""

    text: str | None = None
    status: str | None = None
    owner: str | None = None
    enrollment_id: str | None = None
    expiry: str | None = None
    refs: frozenset[str] | None = None  # only these devices (imprint references)


#: The orders of the device list; the newest activity first unless chosen otherwise.
DEVICE_SORT = SortKeys(
    {
        "device_id": devices.c.device_id,
        "status": devices.c.status,
        "org": devices.c.owner,
        "enrollment": devices.c.enrollment_id,
        "expires": certificates.c.not_after,
        "updated": devices.c.updated_at,
    },
    tie_breaker=devices.c.id,
    default=Order("updated", descending=True),
)

_DEVICE_COLUMNS = (
    devices.c.id,
    devices.c.device_id,
    devices.c.owner,
    devices.c.enrollment_id,
    devices.c.mechanism,
    devices.c.status,
    devices.c.certificate_serial,
    devices.c.updated_at,
    certificates.c.status.label("certificate_status"),
    certificates.c.not_after,
)


def _devices(
    query: Select[Any],
    owners: Collection[str] | None,
    where: DeviceFilter,
    now: datetime,
    *,
    joined: bool = True,
) -> Select[Any]:
    """The device list's FROM and WHERE (one copy for its page, count, export and bulk
    selection). ``joined``: with each device's current certificate (a count without the
    expiry filter needs none, and reads only an index of devices)."""
    joined = joined or where.expiry is not None
    query = query.select_from(
        devices.outerjoin(certificates, certificates.c.serial == devices.c.certificate_serial)
        if joined
        else devices
    )
    query = _scoped(query, devices.c.owner, owners)
    if where.text:
        pattern = contains(where.text)
        query = query.where(
            or_(
                devices.c.device_id.ilike(pattern, escape="\\"),
                devices.c.id.ilike(pattern, escape="\\"),
                devices.c.certificate_serial.ilike(pattern, escape="\\"),
            )
        )
    if where.status:
        query = query.where(devices.c.status == where.status)
    if where.refs is not None:
        query = query.where(devices.c.id.in_(sorted(where.refs)))
    if where.owner:
        query = query.where(devices.c.owner == where.owner)
    if where.enrollment_id:
        query = query.where(devices.c.enrollment_id == where.enrollment_id)
    if where.expiry == "expired":
        query = query.where(certificates.c.not_after <= now)
    elif where.expiry in EXPIRY_FILTERS:
        query = query.where(
            certificates.c.not_after > now,
            certificates.c.not_after <= now + timedelta(days=EXPIRY_FILTERS[where.expiry]),
        )
    return query


def _device_row(row: Any) -> DeviceRow:
    return DeviceRow(
        id=row["id"],
        device_id=row["device_id"],
        owner=row["owner"],
        enrollment_id=row["enrollment_id"],
        mechanism=row["mechanism"],
        status=row["status"],
        certificate_serial=row["certificate_serial"],
        certificate_status=row["certificate_status"],
        not_after=row["not_after"],
        updated_at=row["updated_at"],
    )


def search_devices(
    engine: Engine,
    owners: Collection[str] | None,
    where: DeviceFilter,
    *,
    now: datetime,
    order: Order | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[Sequence[DeviceRow], int]:
    """(a page of devices with their current certificate's status and expiry, how many
    match in all)."""
    clauses = DEVICE_SORT.clauses(order)
    if DEVICE_SORT.known(order).key == "expires" or where.expiry is not None:
        page = _devices(select(*_DEVICE_COLUMNS), owners, where, now)
    else:
        # Choose the page from devices alone, then join the certificates of its rows only.
        chosen = _devices(select(devices.c.id), owners, where, now, joined=False)
        page = _devices(select(*_DEVICE_COLUMNS), None, DeviceFilter(), now).where(
            devices.c.id.in_(chosen.order_by(*clauses).offset(offset).limit(limit))
        )
        offset = 0
    page = page.order_by(*clauses).offset(offset).limit(limit)
    total = _devices(select(func.count()), owners, where, now, joined=False)
    with engine.connect() as conn:
        rows = [_device_row(row) for row in conn.execute(page).mappings()]
        return rows, int(conn.execute(total).scalar_one())


def each_device(
    engine: Engine,
    owners: Collection[str] | None,
    where: DeviceFilter,
    *,
    now: datetime,
    order: Order | None = None,
    chunk: int = 500,
) -> Iterator[DeviceRow]:
    """Every device that matches, read ``chunk`` rows at a time (for the export and a
    bulk action's selection: never the whole list in one result).

    By reference when ``order`` is None, else in the device list's ``order``
    (:data:`DEVICE_SORT`, its tie-breaker the reference), each chunk starting after the
    previous chunk's last (sort value, reference): a device added or changed meanwhile
    never shifts the rows still to come, as an offset would.
    """
    if order is None:
        yield from _each_by(engine, owners, where, now, devices.c.id, False, chunk)
        return
    chosen = DEVICE_SORT.known(order)
    column = DEVICE_SORT.columns[chosen.key]
    yield from _each_by(engine, owners, where, now, column, chosen.descending, chunk)


def _each_by(
    engine: Engine,
    owners: Collection[str] | None,
    where: DeviceFilter,
    now: datetime,
    column: Any,
    descending: bool,
    chunk: int,
) -> Iterator[DeviceRow]:
    ref = devices.c.id
    # Where the database puts NULLs (a device without a certificate has no expiry):
    # PostgreSQL sorts them as the largest value, SQLite as the smallest.
    nulls_after = (engine.dialect.name == "postgresql") != descending
    last: tuple[Any, str] | None = None
    while True:
        query = _devices(select(*_DEVICE_COLUMNS, column.label("sort_value")), owners, where, now)
        if last is not None:
            value, after = last
            beyond = ref < after if descending else ref > after
            if column is ref:
                query = query.where(beyond)
            elif value is None:
                query = query.where(
                    or_(and_(column.is_(None), beyond), column.is_not(None))
                    if not nulls_after
                    else and_(column.is_(None), beyond)
                )
            else:
                further = column < value if descending else column > value
                tied = and_(column == value, beyond)
                query = query.where(
                    or_(further, tied, column.is_(None)) if nulls_after else or_(further, tied)
                )
        clauses = [column.desc() if descending else column.asc()]
        if column is not ref:
            clauses.append(ref.desc() if descending else ref.asc())
        query = query.order_by(*clauses).limit(chunk)
        with engine.connect() as conn:
            found = list(conn.execute(query).mappings())
        yield from (_device_row(row) for row in found)
        if len(found) < chunk:
            return
        last = (found[-1]["sort_value"], found[-1]["id"])


def device_names(engine: Engine, refs: Collection[str]) -> dict[str, str]:
    """The device ids of the devices ``refs`` (imprint references) name."""
    if not refs:
        return {}
    query = select(devices.c.id, devices.c.device_id).where(devices.c.id.in_(sorted(refs)))
    with engine.connect() as conn:
        return {str(ref): str(name) for ref, name in conn.execute(query)}


def user_names(engine: Engine, user_ids: Collection[str]) -> dict[str, str]:
    """The user names of the users ``user_ids`` name."""
    if not user_ids:
        return {}
    query = select(users.c.id, users.c.username).where(users.c.id.in_(sorted(user_ids)))
    with engine.connect() as conn:
        return {str(ref): str(name) for ref, name in conn.execute(query)}


def enrollment_ids(engine: Engine, owners: Collection[str] | None) -> list[str]:
    """The enrollments the user sees, for the filter's choices."""
    query = _scoped(
        select(enrollments.c.id).order_by(enrollments.c.id), enrollments.c.owner, owners
    )
    with engine.connect() as conn:
        return [str(row[0]) for row in conn.execute(query.limit(500))]
