"""The console at fleet scale in chromium: paging with the total, search and sort, a
bulk revoke that the CRL then lists, and a CSV export that matches the filter and
defuses formulas. Fleets are seeded through the stores (tests/integration/console_helpers.py)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from cryptography import x509
from playwright.sync_api import expect

from imprint.pki.records import CertificateStatus
from imprint.provisioning.devices import DeviceStatus
from tests.browser.conftest import Console, login, screenshot
from tests.integration.console_helpers import seed_devices


def _ids(page: Any) -> list[str]:
    return [
        str(v)
        for v in page.locator("#devices tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.device)"
        )
    ]


def test_the_device_list_pages_through_its_total_searches_and_sorts(
    page: Any, console: Console
) -> None:
    seed_devices(
        console.service.runtime,
        "acme-east",
        "meters",
        120,
        prefix="dev",
        certified=False,
        status=DeviceStatus.PENDING,
    )
    login(page, console, console.admin)
    page.get_by_role("link", name="Devices", exact=True).click()
    expect(page.locator("#total")).to_have_text("1\N{EN DASH}50 of 120 devices")
    expect(page.locator("#devices tbody tr")).to_have_count(50)
    seen = set(_ids(page))
    page.get_by_role("link", name="Next →").click()
    expect(page.locator("#total")).to_have_text("51\N{EN DASH}100 of 120 devices")
    seen |= set(_ids(page))
    page.get_by_role("link", name="Last »").click()
    expect(page.locator("#total")).to_have_text("101\N{EN DASH}120 of 120 devices")
    seen |= set(_ids(page))
    assert seen == {f"dev-{n:04d}" for n in range(120)}  # every device, once

    page.get_by_label("Search").fill("dev-011")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#total")).to_have_text("1\N{EN DASH}10 of 10 devices")
    page.get_by_role("link", name="Device", exact=True).click()
    expect(page.get_by_role("link", name="Device ▲")).to_be_visible()
    assert _ids(page) == [f"dev-{n:04d}" for n in range(110, 120)]
    page.get_by_role("link", name="Device ▲").click()
    expect(page.get_by_role("link", name="Device ▼")).to_be_visible()
    assert _ids(page) == [f"dev-{n:04d}" for n in range(119, 109, -1)]
    screenshot(page, "devices-paged")


def test_a_bulk_revoke_names_the_count_and_the_crl_lists_the_devices(
    page: Any, console: Console
) -> None:
    service = console.service
    runtime = service.runtime
    doomed = seed_devices(runtime, "acme-east", "meters", 37, prefix="lot7")
    kept = seed_devices(runtime, "acme-west", "meters-west", 3, prefix="lot8")
    login(page, console, console.admin)
    page.goto(f"{console.url}/devices?q=lot7")
    expect(page.locator("#total")).to_have_text("1\N{EN DASH}37 of 37 devices")
    page.get_by_label("Select all 37 matching").check()
    page.get_by_role("button", name="Revoke selected").click()
    assert page.locator("#bulk-question").inner_text() == "Revoke 37 devices?"
    page.get_by_label("Reason").select_option("keyCompromise")
    screenshot(page, "bulk-confirm")
    page.get_by_role("button", name="Revoke 37 devices").click()
    assert "Revoke: 37 devices done." in page.locator(".banner").inner_text()

    for device in doomed:
        record = runtime.ledger.get(device.certificate_serial or "")
        assert record.status is CertificateStatus.REVOKED
    with service.client() as client:
        crl = x509.load_pem_x509_crl(client.get("/crl/issuing.pem").content)
    listed = {format(r.serial_number, "x") for r in crl}
    assert {d.certificate_serial for d in doomed} <= listed
    assert not {d.certificate_serial for d in kept} & listed

    page.get_by_role("link", name="Certificates", exact=True).click()
    page.get_by_role("link", name="Revoked", exact=True).click()
    expect(page.locator("#total")).to_have_text("1\N{EN DASH}37 of 37 certificates")
    screenshot(page, "certificates")

    # Devices picked one by one: only those, and the count says so.
    page.goto(f"{console.url}/devices?q=lot8")
    page.get_by_label("Select lot8-0000").check()
    page.get_by_label("Select lot8-0002").check()
    page.get_by_role("button", name="Disable selected").click()
    assert page.locator("#bulk-question").inner_text() == "Disable 2 devices?"
    page.get_by_role("button", name="Disable 2 devices").click()
    statuses = [runtime.devices.get(d.id).status for d in kept]
    assert statuses == [DeviceStatus.DISABLED, DeviceStatus.PROVISIONED, DeviceStatus.DISABLED]


def test_the_csv_export_matches_the_filter_and_defuses_formulas(
    page: Any, console: Console, tmp_path: Path
) -> None:
    runtime = console.service.runtime
    seed_devices(
        runtime,
        "acme-east",
        "meters",
        0,
        prefix="x",
        certified=False,
        status=DeviceStatus.PENDING,
        device_ids=['=HYPERLINK("http://evil.example")', "meter-b"],
    )
    seed_devices(runtime, "acme-east", "meters", 3, prefix="meter-ok")  # provisioned
    login(page, console, console.admin)
    page.goto(f"{console.url}/devices?status=pending")
    expect(page.locator("#total")).to_have_text("1\N{EN DASH}2 of 2 devices")
    with page.expect_download() as started:
        page.get_by_role("link", name="Export these 2 devices (CSV)").click()
    saved = tmp_path / "devices.csv"
    started.value.save_as(saved)
    with saved.open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert sorted(r["device_id"] for r in rows) == [
        '\'=HYPERLINK("http://evil.example")',
        "meter-b",
    ]
    assert {r["status"] for r in rows} == {"pending"}
    assert {r["organization_name"] for r in rows} == {"Acme East"}


def test_the_csv_export_keeps_the_lists_sort(page: Any, console: Console, tmp_path: Path) -> None:
    seed_devices(
        console.service.runtime,
        "acme-east",
        "meters",
        30,
        prefix="dev",
        certified=False,
        status=DeviceStatus.PENDING,
    )
    login(page, console, console.admin)
    page.goto(f"{console.url}/devices")
    page.get_by_role("link", name="Device", exact=True).click()
    page.get_by_role("link", name="Device ▲").click()  # device id, descending
    shown = _ids(page)
    assert shown == [f"dev-{n:04d}" for n in range(29, -1, -1)]
    with page.expect_download() as started:
        page.locator("#export").click()
    saved = tmp_path / "devices.csv"
    started.value.save_as(saved)
    with saved.open(newline="") as file:
        exported = [r["device_id"] for r in csv.DictReader(file)]
    assert exported == shown
