"""Accounts in the console: a user changes her password on her account page; an admin
disables, enables and resets the password of a member of her organizations."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from playwright.sync_api import expect

from imprint.audit import AuditQuery
from imprint.tenancy.roles import Role
from tests.browser.conftest import Console, Problems, User, login, screenshot

NEW_PASSWORD = "a brand new passphrase"
COOKIE = "__Host-imprint-console"


def _signs_in(page: Any, console: Console, user: User) -> bool:
    page.goto(f"{console.url}/login")
    page.get_by_label("User name").fill(user.username)
    page.get_by_label("Password").fill(user.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    return bool(page.url == f"{console.url}/")


def test_a_user_changes_her_password_and_her_other_sessions_end(
    page: Any, console: Console, problems: Problems
) -> None:
    eve = console.add_user("eve@east.example", "acme-east", Role.OPERATOR)
    login(page, console, eve)
    old_cookie = next(c for c in page.context.cookies() if c["name"] == COOKIE)
    console.service.clock.advance(timedelta(seconds=1))  # sessions start in whole seconds

    page.get_by_role("link", name="Account", exact=True).click()
    page.wait_for_url(f"{console.url}/account")
    assert "acme-east: operator" in page.locator("main").inner_text()
    form = page.locator("#password")
    problems.expect("403")  # chromium logs the refused form's answer
    form.get_by_label("Current password").fill("not the password")
    form.get_by_label("New password (at least").fill(NEW_PASSWORD)
    form.get_by_label("New password again").fill(NEW_PASSWORD)
    form.get_by_role("button", name="Change password").click()
    assert page.get_by_role("alert").inner_text() == "the current password is wrong"

    form = page.locator("#password")
    form.get_by_label("Current password").fill(eve.password)
    form.get_by_label("New password (at least").fill(NEW_PASSWORD)
    form.get_by_label("New password again").fill(NEW_PASSWORD)
    form.get_by_role("button", name="Change password").click()
    page.wait_for_url(f"{console.url}/account")
    assert "Password changed" in page.get_by_role("status").inner_text()
    assert page.locator("header .who").inner_text() == eve.username  # still signed in here
    screenshot(page, "account")
    audit = console.service.runtime.audit
    changed = audit.search(AuditQuery(actor=f"user:{eve.username}", action="user.password.change"))
    assert len(changed) == 1
    refused = audit.search(AuditQuery(actor=f"user:{eve.username}", outcome="failure"))
    assert [(e.action, e.details.get("via")) for e in refused] == [
        ("user.login", "password-change")
    ]

    # The session from before the change, wherever a copy of it is, has ended.
    current = next(c for c in page.context.cookies() if c["name"] == COOKIE)
    page.context.clear_cookies()
    page.context.add_cookies([old_cookie])
    page.goto(f"{console.url}/devices")
    page.wait_for_url(f"{console.url}/login?next=%2Fconsole%2Fdevices")
    page.context.add_cookies([current])
    page.goto(f"{console.url}/devices")
    page.wait_for_url(f"{console.url}/devices")

    page.get_by_role("button", name="Sign out").click()
    problems.expect("401")  # the old password's refused sign-in
    assert not _signs_in(page, console, eve)
    assert _signs_in(page, console, User(eve.username, NEW_PASSWORD, eve.org))


def test_an_admin_disables_enables_and_resets_a_member(
    page: Any, console: Console, problems: Problems
) -> None:
    ops = console.add_user("ops@west.example", "acme-west", Role.OPERATOR)
    login(page, console, console.admin)
    page.goto(f"{console.url}/orgs")
    row = page.locator("tr[data-user='ops@west.example']")
    row.get_by_role("button", name="Disable").click()
    assert "ops@west.example is disabled" in page.get_by_role("status").inner_text()
    row = page.locator("tr[data-user='ops@west.example']")
    assert "disabled" in row.locator("td").first.inner_text()
    own = page.locator(f"tr[data-user='{console.admin.username}']")
    expect(own).to_have_count(1)
    expect(own.get_by_role("button", name="Disable")).to_have_count(0)  # not her own account

    row.get_by_label("New password for ops@west.example").fill(NEW_PASSWORD)
    row.get_by_role("button", name="Reset password").click()
    assert "Password of ops@west.example reset" in page.get_by_role("status").inner_text()
    page.get_by_role("button", name="Sign out").click()
    problems.expect("401")  # disabled: refused like a wrong password
    assert not _signs_in(page, console, User(ops.username, NEW_PASSWORD, ops.org))

    login(page, console, console.admin)
    page.goto(f"{console.url}/orgs")
    page.locator("tr[data-user='ops@west.example']").get_by_role("button", name="Enable").click()
    assert "ops@west.example is enabled" in page.get_by_role("status").inner_text()
    page.get_by_role("button", name="Sign out").click()
    problems.expect("401")  # the old password no longer works
    assert not _signs_in(page, console, ops)
    assert _signs_in(page, console, User(ops.username, NEW_PASSWORD, ops.org))
    runtime = console.service.runtime
    member = runtime.users.find_by_username(ops.username)
    assert member is not None
    logged = runtime.audit.search(AuditQuery(actor=f"user:{console.admin.username}"))
    assert [e.action for e in logged if e.target_id == member.id] == [
        "user.enable",
        "user.password.reset",
        "user.disable",
    ]
