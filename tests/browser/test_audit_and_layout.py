"""The audit log page (filters, pages, scope) and the small-screen navigation."""

from __future__ import annotations

from typing import Any

from imprint.audit import AuditEntry
from imprint.tenancy.roles import Role
from tests.browser.conftest import Console, Problems, login, screenshot


def test_the_audit_log_filters_and_pages(page: Any, console: Console) -> None:
    audit = console.service.runtime.audit
    for n in range(60):
        audit.write(
            AuditEntry(
                actor="api-key:admin",
                action="enrollment.update",
                target_type="enrollment",
                target_id=f"batch-{n:02d}",
                org_id="acme-east",
            )
        )
    audit.write(
        AuditEntry(actor="api-key:admin", action="org.create", target_type="org", org_id="acme")
    )
    audit.write(AuditEntry(actor="api-key:admin", action="secret.other", target_type="x"))

    login(page, console, console.admin)
    page.get_by_role("link", name="Audit").click()
    rows = page.locator("#audit tbody tr")
    assert rows.count() == 50
    assert "user.login" in rows.first.inner_text()  # newest first: this sign-in
    assert page.locator("#verify-chain").count() == 0  # the chain is the instance's
    screenshot(page, "audit")
    page.get_by_role("link", name="Next →").click()
    older = page.locator("#audit tbody tr").all_inner_texts()
    assert len(older) == 12  # 62 entries of acme and below; none of the instance's
    assert not any("secret.other" in row for row in older)

    page.goto(f"{console.url}/audit")
    page.get_by_label("Action").fill("enrollment.update")
    page.get_by_label("Organization").select_option("acme-east")
    page.get_by_role("button", name="Filter").click()
    assert page.locator("#audit tbody tr").count() == 50
    page.get_by_role("link", name="Next →").click()
    assert page.locator("#audit tbody tr").count() == 10
    assert "batch-00" in page.locator("#audit tbody tr").last.inner_text()
    page.get_by_label("Action").fill("no.such.action")
    page.get_by_role("button", name="Filter").click()
    assert "No entry matches these filters" in page.locator("main").inner_text()


def test_an_operator_is_told_the_audit_log_is_for_admins(
    page: Any, console: Console, problems: Problems
) -> None:
    problems.expect("403")
    operator = console.add_user("ops@acme.example", "acme-west", Role.OPERATOR)
    login(page, console, operator)
    answer = page.goto(f"{console.url}/audit")
    assert answer is not None
    assert answer.status == 403
    assert page.get_by_role("alert").inner_text() == "the audit log is for admins"


def test_the_menu_folds_into_a_button_at_390_px(page: Any, console: Console) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    login(page, console, console.admin)
    devices = page.get_by_role("link", name="Devices", exact=True)
    assert not devices.is_visible()
    page.get_by_role("button", name="Menu").click()
    assert devices.is_visible()
    page.get_by_role("link", name="Audit").click()
    page.wait_for_url(f"{console.url}/audit")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390  # nothing sticks out sideways
