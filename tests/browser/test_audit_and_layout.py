"""The audit log page (filters, pages, scope) and the small-screen navigation."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import expect

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
    expect(rows).to_have_count(50)
    assert "user.login" in rows.first.inner_text()  # newest first: this sign-in
    expect(page.locator("#verify-chain")).to_have_count(0)  # the chain is the instance's
    screenshot(page, "audit")
    page.get_by_role("link", name="Next →").click()
    # 62 entries of acme and below; none of the instance's
    expect(page.locator("#audit tbody tr")).to_have_count(12)
    older = page.locator("#audit tbody tr").all_inner_texts()
    assert not any("secret.other" in row for row in older)

    page.goto(f"{console.url}/audit")
    page.get_by_label("Action").fill("enrollment.update")
    page.get_by_label("Organization").select_option("acme-east")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#audit tbody tr")).to_have_count(50)
    page.get_by_role("link", name="Next →").click()
    expect(page.locator("#audit tbody tr")).to_have_count(10)
    assert "batch-00" in page.locator("#audit tbody tr").last.inner_text()
    page.get_by_label("Action").fill("no.such.action")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("main")).to_contain_text("No entry matches these filters")


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


# The top bar's visible links and buttons, left to right: their labels, their tops, those
# taller than one line, and each pair where one starts before the one left of it ends.
TOPBAR = """() => {
  const shown = [...document.querySelectorAll(".topbar a, .topbar button")]
    .filter(e => e.getClientRects().length > 0)
    .map(e => [e.innerText.trim(), e.getBoundingClientRect()])
    .sort((a, b) => a[1].left - b[1].left);
  const overlaps = [];
  for (let i = 1; i < shown.length; i++) {
    if (shown[i][1].left < shown[i - 1][1].right - 0.5) {
      overlaps.push(`${shown[i - 1][0]} | ${shown[i][0]}`);
    }
  }
  return {
    labels: shown.map(([label]) => label).filter(Boolean),
    tops: [...new Set(shown.map(([, box]) => Math.round(box.top)))],
    tall: shown.filter(([, box]) => box.height > 40).map(([label]) => label),
    overlaps,
    right: Math.max(...shown.map(([, box]) => box.right)),
    width: document.documentElement.scrollWidth,
  };
}"""


def test_the_nav_fits_one_line_at_1280_px_and_folds_below_1200(page: Any, console: Console) -> None:
    admin = console.add_user("a-rather-long-operator-name@acme-industries.example", "acme")
    login(page, console, admin)
    for width in (1280, 1200):
        page.set_viewport_size({"width": width, "height": 900})
        bar = page.evaluate(TOPBAR)
        assert {"Certificates", "Webhooks", "Trusted CAs", "Account", "Sign out"} <= set(
            bar["labels"]
        ), bar
        assert len(bar["tall"]) == 0, f"{width} px: entries on two lines: {bar['tall']}"
        # brand, nav entries, name and Sign out share one baseline (within a few px)
        assert max(bar["tops"]) - min(bar["tops"]) <= 8, f"{width} px: {bar['tops']}"
        assert bar["overlaps"] == [], f"{width} px: entries on top of each other"
        assert bar["right"] <= width
        assert bar["width"] <= width
        assert not page.get_by_role("button", name="Menu").is_visible()
    page.set_viewport_size({"width": 1100, "height": 900})
    webhooks = page.get_by_role("link", name="Webhooks", exact=True)
    assert not webhooks.is_visible()
    page.get_by_role("button", name="Menu").click()
    assert webhooks.is_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 1100


def test_the_audit_log_sorts_by_actor_action_target_and_outcome(
    page: Any, console: Console
) -> None:
    audit = console.service.runtime.audit
    for actor, action, target, outcome in [
        ("user:carol", "device.approve", "dev-b", "success"),
        ("api-key:ci", "webhook.create", "dev-c", "failure"),
        ("user:alice", "device.revoke", "dev-a", "success"),
        ("user:bob", "org.update", "acme-east", "failure"),
    ]:
        audit.write(
            AuditEntry(
                actor=actor,
                action=action,
                target_type="device",
                target_id=target,
                org_id="acme-east",
                outcome=outcome,  # type: ignore[arg-type]
            )
        )
    login(page, console, console.admin)

    def column(n: int) -> list[str]:
        cells = page.locator(f"#audit tbody tr td:nth-child({n})").all_inner_texts()
        return [c.strip() for c in cells]

    page.goto(f"{console.url}/audit?org=acme-east")
    page.get_by_role("link", name="Actor", exact=True).click()
    assert column(2) == ["api-key:ci", "user:alice", "user:bob", "user:carol"]
    page.get_by_role("link", name="Actor ▲").click()
    assert column(2) == ["user:carol", "user:bob", "user:alice", "api-key:ci"]
    assert "org=acme-east" in page.url  # the filter is kept
    page.get_by_role("link", name="Action", exact=True).click()
    assert column(3) == ["device.approve", "device.revoke", "org.update", "webhook.create"]
    page.get_by_role("link", name="Target", exact=True).click()
    assert [c.split()[-1] for c in column(4)] == ["acme-east", "dev-a", "dev-b", "dev-c"]
    page.get_by_role("link", name="Outcome", exact=True).click()
    outcomes = column(6)
    assert outcomes == sorted(outcomes)
    assert outcomes[0] != outcomes[-1]
    # Anything but a listed column falls back to newest first.
    page.goto(f"{console.url}/audit?org=acme-east&sort=details")
    assert column(2)[0] == "user:bob"
