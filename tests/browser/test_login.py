"""Signing in and out of the console in a real browser."""

from __future__ import annotations

from typing import Any

from imprint.audit import AuditQuery
from tests.browser.conftest import Console, Problems, User, login, screenshot


def test_sign_in_shows_the_dashboard_and_sign_out_ends_the_session(
    page: Any, console: Console
) -> None:
    page.goto(f"{console.url}/devices")
    page.wait_for_url(f"{console.url}/login?next=%2Fconsole%2Fdevices")
    screenshot(page, "login")
    page.get_by_label("User name").fill(console.admin.username)
    page.get_by_label("Password").fill(console.admin.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{console.url}/devices")  # back where the user wanted to go
    assert page.locator("header .who").inner_text() == console.admin.username

    cookie = next(c for c in page.context.cookies() if c["name"] == "__Host-imprint-console")
    assert cookie["httpOnly"] is True
    assert cookie["secure"] is True
    assert cookie["sameSite"] == "Lax"

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{console.url}/login")
    assert page.get_by_role("status").inner_text() == "You are signed out."
    assert not [c for c in page.context.cookies() if c["name"] == "__Host-imprint-console"]
    page.goto(f"{console.url}/")
    page.wait_for_url(f"{console.url}/login?next=%2Fconsole%2F")

    # The session ended on the server too: a copy of the cookie kept from before is refused.
    page.context.add_cookies([cookie])
    page.goto(f"{console.url}/devices")
    page.wait_for_url(f"{console.url}/login?next=%2Fconsole%2Fdevices")
    entries = console.service.runtime.audit.search(AuditQuery(action="user.logout"))
    actor = f"user:{console.admin.username}"
    assert [(e.actor, e.outcome) for e in entries] == [(actor, "success")]


def test_a_wrong_password_shows_a_clear_error(
    page: Any, console: Console, problems: Problems
) -> None:
    problems.expect("401")  # chromium logs the 401 answer of the refused form
    page.goto(f"{console.url}/login")
    page.get_by_label("User name").fill(console.admin.username)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    alert = page.get_by_role("alert")
    assert alert.inner_text() == "Wrong user name or password."
    assert page.get_by_label("User name").input_value() == console.admin.username
    assert page.get_by_label("Password").input_value() == ""
    assert not [c for c in page.context.cookies() if c["name"] == "__Host-imprint-console"]
    screenshot(page, "login-error")
    entries = console.service.runtime.audit.search(AuditQuery())
    assert any(e.action == "user.login" and e.outcome == "failure" for e in entries)


def test_a_stale_session_cookie_is_refused(page: Any, console: Console) -> None:
    login(page, console, console.admin)
    cookie = next(c for c in page.context.cookies() if c["name"] == "__Host-imprint-console")
    tampered = cookie["value"][:-4] + ("AAAA" if not cookie["value"].endswith("AAAA") else "BBBB")
    page.context.clear_cookies()
    page.context.add_cookies([{**cookie, "value": tampered}])
    page.goto(f"{console.url}/")
    page.wait_for_url(f"{console.url}/login?next=%2Fconsole%2F")


def test_a_disabled_user_loses_her_session(page: Any, console: Console) -> None:
    user: User = console.add_user("ops@acme.example", "acme-east")
    login(page, console, user)
    account = console.service.runtime.users.find_by_username(user.username)
    assert account is not None
    console.service.runtime.users.set_disabled(account.id, True)
    page.goto(f"{console.url}/devices")
    page.wait_for_url(f"{console.url}/login?next=%2Fconsole%2Fdevices")


def test_the_sign_in_form_needs_its_csrf_token(
    page: Any, console: Console, problems: Problems
) -> None:
    problems.expect("403")
    page.goto(f"{console.url}/login")  # sets the form's cookie; the token is in the page
    form = {"username": console.admin.username, "password": console.admin.password}
    refused = page.request.post(f"{console.url}/login", form=form, max_redirects=0)
    assert refused.status == 403
    assert "csrf_refused" in refused.text()
    assert not [c for c in page.context.cookies() if c["name"] == "__Host-imprint-console"]
    token = page.locator('input[name="csrf"]').get_attribute("value")
    accepted = page.request.post(
        f"{console.url}/login", form={**form, "csrf": token}, max_redirects=0
    )
    assert accepted.status == 303
    assert accepted.headers["location"] == "/console/"


def test_static_files_are_served_by_their_own_names_only(page: Any, console: Console) -> None:
    css = page.request.get(f"{console.url}/static/console.css")
    assert css.status == 200
    assert css.headers["content-type"].startswith("text/css")
    for name in ("..%2Fpages.py", "%2E%2E%2Fsession.py", "README.md", "..%2F__init__.py"):
        assert page.request.get(f"{console.url}/static/{name}").status == 404
