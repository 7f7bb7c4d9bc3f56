"""The console's device and audit exports stream in the list's chosen order: for every
sort key, both ways, a chunked export gives exactly the rows of the list in the same order
(ties, devices without a certificate and entries without a target included, on SQLite and
PostgreSQL), and a row added while the export runs neither repeats nor hides the rows
still to come."""

from __future__ import annotations

import csv
import io
import re
import uuid
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import insert
from sqlalchemy.engine import Engine

from imprint.audit import AuditEntry, AuditQuery
from imprint.console.queries import DEVICE_SORT, DeviceFilter, each_device, search_devices
from imprint.errors import NotFound
from imprint.store.audit import AUDIT_SORT
from imprint.store.listing import Order
from imprint.store.tables import certificates, devices
from imprint.tenancy.access import Principal
from imprint.tenancy.roles import Role
from tests.integration.conftest import Service, with_orgs
from tests.integration.console_helpers import add_user, console_client

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


# The audit log's export: the same keyset reading, in the audit list's orders.

ACTORS = ("carol", "alice", "bob")


def _audit_entries(service: Service, count: int = 23) -> None:
    for n in range(count):
        # Ties on purpose (three actors, two outcomes), entries without a target.
        service.runtime.audit.write(
            AuditEntry(
                actor=ACTORS[n % 3],
                action=("device.disable", "device.enable", "enrollment.create", "user.add")[n % 4],
                target_type="device",
                target_id=None if n % 4 == 0 else f"t-{n % 5}",
                org_id="acme",
                outcome="failure" if n % 2 else "success",
            )
        )


@pytest.mark.both_databases
def test_the_audit_export_reads_in_every_order_of_the_list(service: Service) -> None:
    with_orgs(service, "acme")
    _audit_entries(service)
    ops = service.runtime.app.audit
    admin = Principal(kind="user", subject="u-1", name="a", memberships={"acme": Role.ADMIN})
    for key in AUDIT_SORT.columns:
        for descending in (False, True):
            query = AuditQuery(order=Order(key, descending))
            listed = [e.id for e in ops.search(admin, replace(query, limit=1000))]
            assert [e.id for e in ops.each(admin, query, chunk=4)] == listed, f"sort {key}"
    # An entry written meanwhile sorts first (newest first): read neither twice nor hidden.
    query = AuditQuery(order=Order("at", descending=True))
    before = [e.id for e in ops.search(admin, replace(query, limit=1000))]
    reading = ops.each(admin, query, chunk=4)
    seen = [next(reading).id for _ in range(4)]
    _audit_entries(service, 1)
    seen.extend(e.id for e in reading)
    assert seen == before
    # The scope is checked before the first entry is read.
    with pytest.raises(NotFound):
        ops.each(admin, query, org="globex")


def _exported(client: httpx.Client, **params: str) -> list[dict[str, str]]:
    got = client.get("/console/audit.csv", params=params)
    assert got.status_code == 200, got.text
    return list(csv.DictReader(io.StringIO(got.text)))


_AUDIT_ROW = re.compile(r'data-label="Actor">([^<]*)</td><td data-label="Action"><code>([^<]*)<')


def test_the_console_audit_export_keeps_the_lists_sort_and_filters(service: Service) -> None:
    with_orgs(service, "acme")
    _audit_entries(service)
    add_user(service, "admin@acme.example", "acme")
    with closing(console_client(service, "admin@acme.example")) as client:
        rows = _exported(client, sort="-actor")
        keys = [(r["actor"], int(r["id"])) for r in rows]
        assert keys == sorted(keys, reverse=True)
        assert {"alice", "bob", "carol"} <= {r["actor"] for r in rows}
        # The rows are the page's, in the page's order.
        page = client.get("/console/audit", params={"sort": "-actor"}).text
        assert _AUDIT_ROW.findall(page) == [(r["actor"], r["action"]) for r in rows][:50]
        # Ascending by target: entries without one together, each run oldest first.
        targets = _exported(client, sort="target", actor="bob")
        assert {r["actor"] for r in targets} == {"bob"}
        with_target = [(r["target_id"], int(r["id"])) for r in targets if r["target_id"]]
        assert with_target == sorted(with_target)
        blank = [i for i, r in enumerate(targets) if not r["target_id"]]
        assert blank == list(range(blank[0], blank[0] + len(blank)))
        # A sort the list does not know falls back to newest first, as on the page.
        for unknown in ("details", "-id); drop table audit_log; --", "--actor"):
            ids = [int(r["id"]) for r in _exported(client, sort=unknown)]
            assert ids == sorted(ids, reverse=True)
            assert len(ids) >= 23
