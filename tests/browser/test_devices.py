"""The dashboard, the device list and a device's page, with devices the SDK provisioned."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from playwright.sync_api import expect

from imprint.device import Bundle, RequestRefused
from imprint.pki.records import CertificateStatus
from imprint.provisioning.devices import DeviceStatus
from tests.browser.conftest import Console, Problems, login, screenshot
from tests.browser.fleet import device, oob_enrollment, provision, register


def test_a_provisioned_device_appears_on_the_dashboard_and_in_the_list(
    page: Any, console: Console, tmp_path: Path
) -> None:
    service = console.service
    oob_enrollment(service, "meters-east", "acme-east", validity_days=20)
    register(service, "meters-east", "meter-0001", "label-secret-0001")
    bundle = provision(service, tmp_path, "meter-0001", "label-secret-0001")
    register(service, "meters-east", "meter-0002", "label-secret-0002")
    with pytest.raises(RequestRefused) as refused:  # a wrong secret: a recorded failure
        provision(service, tmp_path, "meter-0002", "not-the-label-secret")
    code = refused.value.code

    login(page, console, console.admin)
    assert page.locator("#total-devices").inner_text() == "1"
    assert page.locator('[data-status="provisioned"]').inner_text() == "1"
    assert page.locator('[data-status="pending"]').inner_text() == "0"
    assert page.locator("#by-org tr").all_inner_texts() == ["Acme East\t1"]
    expiring = page.locator("#expiring tr").all_inner_texts()
    assert expiring == ["within 7 days\t0", "within 30 days\t1", "within 90 days\t1"]
    today = datetime.now(UTC).date().isoformat()
    day = page.locator(f'#attempts-table tr[data-day="{today}"] td')
    assert day.all_text_contents() == [f"{today} (today)", "1", "1"]
    expect(page.locator("#attempts-chart canvas").first).to_be_attached()
    failures = page.locator("#failures tbody tr")
    expect(failures).to_have_count(1)
    assert code in failures.first.inner_text()
    assert "meter-0002" in failures.first.inner_text()
    screenshot(page, "dashboard")

    page.get_by_role("link", name="Devices", exact=True).click()
    row = page.locator('#devices tr[data-device="meter-0001"]')
    assert "provisioned" in row.inner_text()
    assert "Acme East" in row.inner_text()  # organizations by name
    screenshot(page, "devices")

    page.get_by_label("Status").select_option("pending")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("main")).to_contain_text("No device matches these filters")
    page.get_by_label("Status").select_option("")
    page.get_by_label("Search").fill("0001")
    page.get_by_label("Certificate expiry").select_option("30")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#devices tbody tr")).to_have_count(1)
    page.get_by_label("Certificate expiry").select_option("7")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("main")).to_contain_text("No device matches these filters")
    expect(page.locator("#devices")).to_have_count(0)

    page.get_by_role("link", name="Clear the filters").click()
    page.get_by_role("link", name="meter-0001").click()
    certificate = x509.load_pem_x509_certificate(bundle.certificate_pem.encode())
    serial = format(certificate.serial_number, "x")
    details = page.locator("#certificate").inner_text()
    assert serial in details
    assert "EC secp256r1" in details
    assert "issued" in details
    steps = page.locator("#timeline li")
    assert [s.split()[:2] for s in steps.all_inner_texts()] == [
        ["ok", "attest"],
        ["ok", "policy"],
        ["ok", "issue"],
        ["ok", "bundle"],
    ]
    screenshot(page, "device")


def test_approve_a_pending_device_then_revoke_it(
    page: Any, console: Console, tmp_path: Path
) -> None:
    service = console.service
    oob_enrollment(service, "held", "acme-west", manual_approval=True)
    register(service, "held", "gate-7", "gate-secret-0007")
    collected: list[Bundle] = []
    waiting = threading.Thread(
        target=lambda: collected.append(
            provision(service, tmp_path, "gate-7", "gate-secret-0007", wait=60)
        ),
        daemon=True,
    )
    waiting.start()
    assert device(service, "gate-7").status is DeviceStatus.PENDING

    login(page, console, console.admin)
    assert page.locator('[data-status="pending"]').inner_text() == "1"
    page.goto(f"{console.url}/devices?status=pending")
    page.get_by_role("link", name="gate-7").click()
    assert page.locator("#device-status").inner_text() == "pending"
    assert "waits for approval" in page.locator("main").inner_text()
    page.get_by_role("link", name="Approve").click()
    screenshot(page, "confirm-approve")
    page.get_by_role("button", name="Approve").click()
    assert page.get_by_role("status").inner_text() == ("Approve: device gate-7 is now approved.")
    waiting.join(timeout=30)
    assert collected, "the device did not collect its certificate after the approval"
    page.reload()
    assert page.locator("#device-status").inner_text() == "provisioned"

    page.get_by_role("link", name="Revoke").click()
    page.get_by_label("Reason").select_option("keyCompromise")
    page.get_by_role("button", name="Revoke").click()
    assert page.locator("#device-status").inner_text() == "disabled"
    assert "revoked" in page.locator("#certificate").inner_text()
    serial = format(
        x509.load_pem_x509_certificate(collected[0].certificate_pem.encode()).serial_number, "x"
    )
    record = service.runtime.ledger.get(serial)
    assert record.status is CertificateStatus.REVOKED
    assert record.revocation_reason == "keyCompromise"

    page.get_by_role("link", name="Audit").click()
    page.get_by_label("Action").fill("device.revoke")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("#audit tbody tr")
    expect(rows).to_have_count(1)
    assert f"user:{console.admin.username}" in rows.first.inner_text()
    assert "keyCompromise" in rows.first.inner_text()


def test_a_sub_organization_user_cannot_see_a_sibling_device(
    page: Any, console: Console, tmp_path: Path, problems: Problems
) -> None:
    service = console.service
    for org in ("acme-east", "acme-west"):
        oob_enrollment(service, f"meters-{org}", org)
        register(service, f"meters-{org}", f"meter-{org}", f"secret-of-{org}")
        provision(service, tmp_path, f"meter-{org}", f"secret-of-{org}")
    west = device(service, "meter-acme-west")
    east_admin = console.add_user("east@acme.example", "acme-east")

    login(page, console, east_admin)
    assert page.locator("#total-devices").inner_text() == "1"
    assert page.locator("#by-org tr").all_inner_texts() == ["Acme East\t1"]
    page.goto(f"{console.url}/devices")
    assert (
        page.locator("#devices tbody tr")
        .all_inner_texts()[0]
        .lstrip()
        .startswith("meter-acme-east")
    )
    expect(page.locator("#devices tbody tr")).to_have_count(1)
    page.goto(f"{console.url}/devices?org=acme-west")
    expect(page.locator("#devices")).to_have_count(0)

    problems.expect("404")
    problems.expect("404")
    problems.expect("404")
    zeros = "00000000-0000-0000-0000-000000000000"
    foreign = page.goto(f"{console.url}/devices/{west.id}")
    assert foreign is not None
    assert foreign.status == 404
    foreign_text = page.get_by_role("alert").inner_text()
    missing = page.goto(f"{console.url}/devices/{zeros}")
    assert missing is not None
    assert missing.status == 404
    missing_text = page.get_by_role("alert").inner_text()
    assert foreign_text.replace(west.id, "ID") == missing_text.replace(zeros, "ID")  # no leak
    confirm = page.goto(f"{console.url}/devices/{west.id}/revoke")
    assert confirm is not None
    assert confirm.status == 404

    # even with her own valid CSRF token, a POST to the sibling's device is a 404
    page.goto(f"{console.url}/devices")
    token = page.locator('form.signout input[name="csrf"]').get_attribute("value")
    posted = page.request.post(
        f"{console.url}/devices/{west.id}/revoke", form={"csrf": token, "reason": "unspecified"}
    )
    assert posted.status == 404
    assert device(service, "meter-acme-west").status is DeviceStatus.PROVISIONED


def test_an_action_without_the_csrf_token_is_refused(
    page: Any, console: Console, tmp_path: Path
) -> None:
    service = console.service
    oob_enrollment(service, "meters", "acme")
    register(service, "meters", "meter-9", "secret-of-meter-9")
    provision(service, tmp_path, "meter-9", "secret-of-meter-9")
    ref = device(service, "meter-9").id
    login(page, console, console.admin)
    for form in ({}, {"csrf": "forged"}):
        refused = page.request.post(f"{console.url}/devices/{ref}/disable", form=form)
        assert refused.status == 403
        assert "csrf_refused" in refused.text()
    assert device(service, "meter-9").status is DeviceStatus.PROVISIONED
