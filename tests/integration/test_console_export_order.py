"""The console's device export streams in the list's chosen order: for every sort key,
both ways, a chunked export gives exactly the rows of the list in the same order (ties
and devices without a certificate included, on SQLite and PostgreSQL), and a device
added while the export runs neither repeats nor hides the devices still to come."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert
from sqlalchemy.engine import Engine

from imprint.console.queries import DEVICE_SORT, DeviceFilter, each_device, search_devices
from imprint.store.listing import Order
from imprint.store.tables import certificates, devices

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _device(engine: Engine, n: int, *, expires_in_days: int | None, updated: datetime) -> str:
    ref = str(uuid.uuid4())
    serial = None
    with engine.begin() as conn:
        if expires_in_days is not None:
            serial = f"{n:040x}"
            conn.execute(
                insert(certificates).values(
                    serial=serial,
                    issuer="i",
                    profile="device",
                    subject=f"CN=d{n}",
                    status="issued" if n % 5 else "revoked",
                    not_before=NOW - timedelta(days=1),
                    not_after=NOW + timedelta(days=expires_in_days),
                    requested_by="test",
                    created_at=NOW,
                    owner="acme",
                    device_ref=ref,
                )
            )
        conn.execute(
            insert(devices).values(
                id=ref,
                owner=("acme", "acme-east", "acme-west")[n % 3],
                device_id=f"dev-{n % 7}-{n:03d}",
                enrollment_id=("meters", "pumps")[n % 2],
                mechanism="oob-secret",
                status=("pending", "provisioned", "disabled")[n % 3],
                certificate_serial=serial,
                created_at=NOW,
                updated_at=updated,
            )
        )
    return ref


def _fleet(engine: Engine) -> None:
    for n in range(23):
        # Ties on purpose: three update times, four expiry days, seven without certificate.
        expires = None if n % 3 == 0 else (n % 4) * 10
        _device(engine, n, expires_in_days=expires, updated=NOW - timedelta(hours=n % 3))


def _page(engine: Engine, order: Order, where: DeviceFilter | None = None) -> list[str]:
    rows, total = search_devices(
        engine, None, where or DeviceFilter(), now=NOW, order=order, limit=1000
    )
    assert len(rows) == total
    return [r.id for r in rows]


@pytest.mark.both_databases
def test_the_export_follows_the_lists_order_for_every_sort(engine: Engine) -> None:
    _fleet(engine)
    for key in DEVICE_SORT.columns:
        for descending in (False, True):
            order = Order(key, descending)
            expected = _page(engine, order)
            exported = [
                r.id
                for r in each_device(engine, None, DeviceFilter(), now=NOW, order=order, chunk=4)
            ]
            assert exported == expected, f"sort {order}"
    # A filter and a scope apply as on the list.
    where = DeviceFilter(enrollment_id="pumps")
    order = Order("expires", descending=True)
    exported = [r.id for r in each_device(engine, None, where, now=NOW, order=order, chunk=3)]
    assert exported == _page(engine, order, where)
    scoped = list(each_device(engine, {"acme-east"}, DeviceFilter(), now=NOW, order=order))
    assert {r.owner for r in scoped} == {"acme-east"}
    # Without an order: by reference (a bulk action's selection).
    plain = [r.id for r in each_device(engine, None, DeviceFilter(), now=NOW, chunk=5)]
    assert plain == sorted(plain)


@pytest.mark.both_databases
def test_a_device_added_during_the_export_shifts_nothing(engine: Engine) -> None:
    _fleet(engine)
    order = Order("updated", descending=True)
    before = _page(engine, order)
    rows = each_device(engine, None, DeviceFilter(), now=NOW, order=order, chunk=4)
    seen = [next(rows).id for _ in range(4)]
    # Newer than every device: it sorts first, before the rows already read (an offset
    # would now read the fourth row again).
    _device(engine, 99, expires_in_days=5, updated=NOW + timedelta(hours=1))
    seen.extend(r.id for r in rows)
    assert seen == before
