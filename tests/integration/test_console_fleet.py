"""The console at fleet scale, over HTTPS without a browser: true totals and paging on
20,020 OOB secrets (read a page at a time), tenancy of the lists, the PEM download and
bulk actions, the certificates page, and a device's certificate history and renewal."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from sqlalchemy import event

from imprint.audit import AuditQuery
from imprint.pki.records import CertificateStatus
from imprint.provisioning.devices import DeviceStatus
from imprint.tenancy.access import cli_principal
from imprint.tenancy.orgs import create_organization
from tests.browser.fleet import device as device_row
from tests.browser.fleet import provision
from tests.integration.conftest import Service, with_orgs
from tests.integration.console_helpers import (
    add_user,
    console_client,
    csrf_of,
    oob_enrollment,
    seed_devices,
    seed_secrets,
)


@pytest.fixture
def fleet(service: Service) -> Service:
    """The service with organizations acme, and acme-east and acme-west below it."""
    with_orgs(service, "acme")
    now = service.clock.now()
    create_organization(
        service.runtime.orgs, "Acme East", org_id="acme-east", parent_id="acme", at=now
    )
    create_organization(
        service.runtime.orgs, "Acme West", org_id="acme-west", parent_id="acme", at=now
    )
    return service


@pytest.fixture
def sign_in(fleet: Service) -> Iterator[Callable[[str], httpx.Client]]:
    """Signs a user in to the console; the clients close when the test ends."""
    clients: list[httpx.Client] = []

    def signed_in(username: str) -> httpx.Client:
        clients.append(console_client(fleet, username))
        return clients[-1]

    yield signed_in
    for client in clients:
        client.close()


def _register(service: Service, enrollment_id: str, device_id: str, secret: str) -> None:
    with service.admin() as admin:
        registered = admin.post(
            f"/api/v1/enrollments/{enrollment_id}/oob-secrets",
            json={"device_id": device_id, "secret": secret},
        )
    assert registered.status_code in (200, 201), registered.text


def _rows(html: str, table: str) -> list[str]:
    body = re.search(rf'<table class="list" id="{table}">.*?<tbody>(.*?)</tbody>', html, re.S)
    assert body is not None, f"no table {table}"
    return re.findall(r"<tr.*?</tr>", body.group(1), re.S)


def _total(html: str) -> int:
    found = re.search(r'id="total" data-total="(\d+)"', html)
    assert found is not None, "no total on the page"
    return int(found.group(1))


class Statements:
    """The SQL statements the server ran while the block ran."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.seen.append(" ".join(statement.split()))


@contextmanager
def watched(service: Service) -> Iterator[Statements]:
    statements = Statements()
    event.listen(service.runtime.engine, "before_cursor_execute", statements)
    try:
        yield statements
    finally:
        event.remove(service.runtime.engine, "before_cursor_execute", statements)


@pytest.mark.both_databases
@pytest.mark.slow
def test_twenty_thousand_secrets_page_with_their_total_a_page_at_a_time(
    fleet: Service, sign_in: Callable[[str], httpx.Client]
) -> None:
    oob_enrollment(fleet, "sensors", "acme")
    seed_secrets(fleet.runtime, "sensors", 20_020)
    add_user(fleet, "admin@acme.example", "acme")
    client = sign_in("admin@acme.example")

    with watched(fleet) as statements:
        first = client.get("/console/enrollments/sensors")
    assert first.status_code == 200
    assert _total(first.text) == 20_020
    assert "1\N{EN DASH}50 of 20,020 secrets" in first.text
    assert len(_rows(first.text, "oob-secrets")) == 50
    # Read a page at a time: every query of the secrets counts them or has a LIMIT.
    reads = [s for s in statements.seen if "FROM oob_secrets" in s]
    assert reads, statements.seen
    assert all("count(" in s.lower() or "LIMIT" in s for s in reads), reads
    assert len(statements.seen) < 40

    last = client.get("/console/enrollments/sensors", params={"page": 401})
    assert "20,001\N{EN DASH}20,020 of 20,020 secrets" in last.text
    assert len(_rows(last.text, "oob-secrets")) == 20
    assert "unit-20019" in last.text
    past = client.get("/console/enrollments/sensors", params={"page": 999})
    assert past.status_code == 303  # an old link past the end: to the last page
    assert past.headers["location"] == "/console/enrollments/sensors?page=401"

    found = client.get("/console/enrollments/sensors", params={"q": "unit-1999"})
    assert _total(found.text) == 10
    assert len(_rows(found.text, "oob-secrets")) == 10
    newest_id = client.get("/console/enrollments/sensors", params={"sort": "-device_id"})
    assert "unit-20019" in _rows(newest_id.text, "oob-secrets")[0]

    exported = client.get("/console/enrollments/sensors/oob-secrets.csv", params={"q": "unit-1999"})
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [r["device_id"] for r in rows] == [f"unit-1999{n}" for n in range(10)]
    assert "label-secret" not in exported.text  # never the secrets themselves


@pytest.mark.both_databases
@pytest.mark.slow
def test_an_org_admin_cannot_page_into_or_act_on_another_orgs_devices(
    fleet: Service, sign_in: Callable[[str], httpx.Client]
) -> None:
    runtime = fleet.runtime
    east = seed_devices(runtime, "acme-east", "meters-east", 2, prefix="east")
    west = seed_devices(runtime, "acme-west", "meters-west", 3, prefix="west")
    add_user(fleet, "admin@east.example", "acme-east")
    client = sign_in("admin@east.example")

    listed = client.get("/console/devices")
    assert _total(listed.text) == 2
    assert "west-" not in listed.text
    for query in ({"org": "acme-west"}, {"q": "west"}, {"page": 2}):
        assert "west-" not in client.get("/console/devices", params=query).text
    certificates = client.get("/console/certificates")
    assert _total(certificates.text) == 2
    assert all(d.certificate_serial not in certificates.text for d in west)
    west_serial = west[0].certificate_serial
    foreign_pem = client.get(f"/console/certificates/{west_serial}.pem")
    assert foreign_pem.status_code == 404
    exported = client.get("/console/devices.csv").text
    assert "east-0000" in exported
    assert "west-" not in exported
    assert "west-" not in client.get("/console/certificates.csv").text

    confirm = client.get(
        "/console/devices/bulk", params={"action": "revoke", "device": [east[0].id, west[0].id]}
    )
    assert confirm.status_code == 404
    token = csrf_of(client.get("/console/devices").text)
    refused = client.post(
        "/console/devices/bulk",
        data={"csrf": token, "action": "revoke", "device": [east[0].id, west[0].id]},
    )
    assert refused.status_code == 404
    no_token = client.post(
        "/console/devices/bulk", data={"action": "revoke", "device": [east[0].id]}
    )
    assert no_token.status_code == 403
    for d in east + west:  # nothing changed
        assert runtime.ledger.get(d.certificate_serial or "").status is CertificateStatus.ISSUED
        assert runtime.devices.get(d.id).status is DeviceStatus.PROVISIONED

    confirm = client.get("/console/devices/bulk", params={"action": "revoke", "all": "1"})
    assert "Revoke 2 devices?" in confirm.text
    stale = client.post(  # the page said 5: what matches changed, so ask again
        "/console/devices/bulk",
        data={"csrf": token, "action": "revoke", "all": "1", "expected": "5"},
    )
    assert stale.status_code == 200
    assert "Revoke 2 devices?" in stale.text
    assert 'id="bulk-changed"' in stale.text
    assert runtime.devices.get(east[0].id).status is DeviceStatus.PROVISIONED
    done = client.post(
        "/console/devices/bulk",
        data={
            "csrf": token,
            "action": "revoke",
            "all": "1",
            "expected": "2",
            "reason": "keyCompromise",
        },
    )
    assert done.status_code == 303
    for d in east:
        assert runtime.ledger.get(d.certificate_serial or "").status is CertificateStatus.REVOKED
        assert runtime.devices.get(d.id).status is DeviceStatus.DISABLED
    for d in west:
        assert runtime.ledger.get(d.certificate_serial or "").status is CertificateStatus.ISSUED
    revokes = runtime.audit.search(AuditQuery(action="device.revoke"))
    assert sorted(e.target_id or "" for e in revokes) == sorted(d.id for d in east)
    assert all(e.actor == "user:admin@east.example" for e in revokes)


@pytest.mark.slow
def test_the_certificates_page_has_issued_expiring_and_revoked_tabs_and_pem_download(
    fleet: Service, sign_in: Callable[[str], httpx.Client]
) -> None:
    runtime = fleet.runtime
    made = seed_devices(runtime, "acme-east", "meters", 4, prefix="meter")
    runtime.app.devices.revoke(cli_principal(), made[3].id, disable=True)
    fleet.clock.advance(timedelta(days=70))  # of the device profile's 90: 20 days left
    add_user(fleet, "admin@acme.example", "acme")
    client = sign_in("admin@acme.example")

    everything = client.get("/console/certificates")
    assert _total(everything.text) == 4
    assert "Acme East" in everything.text  # organizations by name
    assert ">meter-0000</a>" in everything.text  # devices by their id
    assert _total(client.get("/console/certificates", params={"tab": "issued"}).text) == 3
    revoked = client.get("/console/certificates", params={"tab": "revoked"}).text
    assert _total(revoked) == 1
    assert (made[3].certificate_serial or "") in revoked
    assert "2027" not in "".join(_rows(revoked, "certificates"))  # no expiry shown
    soon = {"tab": "expiring", "days": "30"}
    assert _total(client.get("/console/certificates", params=soon).text) == 3
    later = {"tab": "expiring", "days": "7"}
    assert "No certificates here yet" in client.get("/console/certificates", params=later).text
    searched = client.get("/console/certificates", params={"q": "meter-0002"}).text
    assert _total(searched) == 1

    serial = made[0].certificate_serial or ""
    pem = client.get(f"/console/certificates/{serial}.pem")
    assert pem.status_code == 200
    assert pem.headers["content-disposition"] == f'attachment; filename="{serial}.pem"'
    certificate = x509.load_pem_x509_certificate(pem.content)
    assert format(certificate.serial_number, "x") == serial
    assert b"PRIVATE KEY" not in pem.content
    assert client.get("/console/certificates/00ff.pem").status_code == 404

    exported = list(
        csv.DictReader(io.StringIO(client.get("/console/certificates.csv?tab=revoked").text))
    )
    assert [(r["serial"], r["status"], r["not_after"]) for r in exported] == [
        (made[3].certificate_serial, "revoked", "")
    ]


@pytest.mark.slow
def test_a_device_page_shows_its_certificate_history_renewal_due_and_no_expiry_once_revoked(
    fleet: Service, sign_in: Callable[[str], httpx.Client], tmp_path: Path
) -> None:
    with fleet.admin() as admin:
        made = admin.post(
            "/api/v1/enrollments",
            json={
                "id": "meters",
                "mechanism": "oob-secret",
                "owner": "acme-east",
                "validity_days": 30,
                "renewal_grace_days": 5,
            },
        )
    assert made.status_code == 201, made.text
    _register(fleet, "meters", "meter-7", "label-secret-first")
    first = provision(fleet, tmp_path / "a", "meter-7", "label-secret-first")
    fleet.clock.advance(timedelta(seconds=2))  # a later second: the history orders by it
    _register(fleet, "meters", "meter-7", "label-secret-again")
    second = provision(fleet, tmp_path / "b", "meter-7", "label-secret-again")
    device = device_row(fleet, "meter-7")
    add_user(fleet, "operator@acme.example", "acme")
    client = sign_in("operator@acme.example")

    page = client.get(f"/console/devices/{device.id}").text
    history = _rows(page, "history")
    assert [re.search(r'data-serial="(\w+)"', r).group(1) for r in history] == [  # type: ignore[union-attr]
        second.serial,
        first.serial,
    ]
    assert "current" in history[0]
    assert "issued" in history[0]
    assert "revoked" in history[1]  # superseded by the second
    certificate = x509.load_pem_x509_certificate((second.certificate_pem or "").encode())
    start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    due = start + (end - start) * 2 / 3
    assert f'id="renewal-due">{due:%Y-%m-%d %H:%M} UTC' in page
    until = end + timedelta(days=5)
    assert f'id="renewal-until">{until:%Y-%m-%d %H:%M} UTC' in page
    assert f'id="not-after">{end:%Y-%m-%d %H:%M} UTC' in page
    assert f'href="/console/certificates/{second.serial}.pem"' in page

    token = csrf_of(client.get(f"/console/devices/{device.id}/revoke").text)
    revoked = client.post(f"/console/devices/{device.id}/revoke", data={"csrf": token})
    assert revoked.status_code == 303
    page = client.get(f"/console/devices/{device.id}").text
    assert 'id="not-after"' not in page
    assert 'id="renewal-due"' not in page
    assert 'id="revoked-at"' in page
    assert f"{end:%Y-%m-%d %H:%M} UTC" not in page  # no expiry anywhere for it
