"""The webhooks page in a real browser: an admin subscribes a receiver (its secret shown
once), a delivery fails with 500 and is retried, and the delivery log shows both
attempts; an admin of another organization sees none of it; no overflow at 390 px."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from imprint.app.webhooks import HookSpec
from imprint.audit import AuditQuery
from imprint.settings import Settings
from imprint.tenancy.access import cli_principal
from imprint.tenancy.orgs import create_organization
from imprint.tenancy.roles import Role
from imprint.tenancy.users import create_user
from tests.browser.conftest import PASSWORD, Console, Problems, User, login, screenshot
from tests.integration.conftest import start_service
from tests.integration.test_lifecycle import Factory
from tests.integration.webhook_receiver import Receiver, receiver


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    """The console fixture's server, accepting http:// receivers on 127.0.0.1."""
    settings = Settings(
        data_dir=tmp_path / "data",
        database={"url": f"sqlite:///{tmp_path}/imprint.db"},
        ca={"passphrase": "test-passphrase"},
        webhooks={"allow_http_loopback": True},
    )
    for service in start_service(settings, tmp_path):
        orgs, now = service.runtime.orgs, service.clock.now()
        create_organization(orgs, "Acme", org_id="acme", at=now)
        create_organization(orgs, "Beta", org_id="beta", at=now)
        console = Console(service, User("admin@acme.example", PASSWORD, "acme"))
        create_user(
            service.runtime.users,
            console.admin.username,
            PASSWORD,
            org_id="acme",
            role=Role.ADMIN,
            at=now,
        )
        yield console


@pytest.fixture
def hooked(console: Console) -> Iterator[Receiver]:
    with receiver(lambda: console.service.clock.now().timestamp()) as found:
        yield found


def test_the_webhooks_page_subscribes_and_shows_each_delivery_attempt(
    page: Any, console: Console, hooked: Receiver, tmp_path: Path
) -> None:
    service = console.service
    login(page, console, console.admin)
    page.goto(f"{console.url}/webhooks")
    assert "No webhook yet" in page.locator("main").inner_text()
    page.locator("#webhook-url").fill(hooked.url)
    page.locator("#webhook-create").click()
    secret = page.locator("#webhook-secret").inner_text().strip()
    assert secret.startswith("whsec_")
    hooked.secret = secret
    expect(page.locator("#subscriptions tbody tr")).to_have_count(1)

    hooked.statuses = [500]
    factory = Factory(service, tmp_path, "fleet")
    assert factory.provision(factory.device("meter-1")).status_code == 200
    hooked.wait_for(1)  # the server's webhook round, or the one below
    service.runtime.outbox.deliver(background=True)
    service.clock.advance(timedelta(seconds=3))
    service.runtime.outbox.deliver(background=True)
    received = hooked.wait_for(2)
    assert all(r.signed for r in received)

    page.goto(f"{console.url}/webhooks")
    rows = page.locator("#deliveries tbody tr")
    expect(rows).to_have_count(2)
    newest, oldest = rows.nth(0), rows.nth(1)
    assert newest.locator(".attempt").inner_text() == "2"
    assert "delivered" in newest.locator(".result").inner_text()
    assert "HTTP 200" in newest.locator(".result").inner_text()
    assert oldest.locator(".attempt").inner_text() == "1"
    assert "HTTP 500" in oldest.locator(".result").inner_text()
    assert "provisioning.succeeded" in newest.inner_text()
    assert secret not in page.content()  # shown once, at creation
    screenshot(page, "webhooks")
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.set_viewport_size({"width": 1280, "height": 900})

    # An admin of another organization sees neither the subscription nor its log.
    other = console.add_user("admin@beta.example", "beta", Role.ADMIN)
    page.context.clear_cookies()
    login(page, console, other)
    page.goto(f"{console.url}/webhooks")
    text = page.locator("main").inner_text()
    assert "No webhook yet" in text
    assert "Nothing delivered yet" in text
    assert hooked.url not in page.content()


def test_a_bad_url_is_refused_on_the_form(page: Any, console: Console, problems: Problems) -> None:
    problems.expect("400")
    login(page, console, console.admin)
    page.goto(f"{console.url}/webhooks")
    page.locator("#webhook-url").fill("http://example.com/hook")
    page.locator("#webhook-create").click()
    assert "https" in page.locator("#webhook-error").inner_text()
    assert console.service.runtime.app.webhooks.search(cli_principal()) == []


def test_a_devices_page_shows_what_the_provisioning_hook_added(
    page: Any, console: Console, hooked: Receiver, tmp_path: Path, problems: Problems
) -> None:
    service = console.service
    service.runtime.app.webhooks.set_hook(cli_principal(), "acme", HookSpec(url=hooked.url))
    hooked.answer = {
        "decision": "allow",
        "claims": {"attributes": {"site": "berlin", "cabinet": "rack-" + "0123456789" * 8}},
    }
    factory = Factory(service, tmp_path, "fleet")
    assert factory.provision(factory.device("meter-1")).status_code == 200
    hooked.answer = {"decision": "allow"}
    assert factory.provision(factory.device("meter-2")).status_code == 200
    claimed = service.runtime.devices.find("acme", "meter-1")
    plain = service.runtime.devices.find("acme", "meter-2")
    assert claimed is not None
    assert plain is not None

    login(page, console, console.admin)
    page.goto(f"{console.url}/devices/{claimed.id}")
    rows = page.locator("#attributes tr").all_inner_texts()
    assert [r.split()[0] for r in rows] == ["cabinet", "site"]
    assert "berlin" in rows[1]
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{console.url}/devices/{plain.id}")
    assert page.locator("#attributes").inner_text().startswith("None")

    # An admin of another organization does not see the device, nor what it was given.
    problems.expect("404")
    other = console.add_user("admin@beta.example", "beta", Role.ADMIN)
    page.context.clear_cookies()
    login(page, console, other)
    answer = page.goto(f"{console.url}/devices/{claimed.id}")
    assert answer is not None
    assert answer.status == 404
    assert "berlin" not in page.content()


def test_a_webhook_is_changed_its_secret_rotated_and_deleted_on_the_console(
    page: Any, console: Console, hooked: Receiver, tmp_path: Path, problems: Problems
) -> None:
    for status in ("400", "403", "404"):
        problems.expect(status)
    service = console.service
    ops = service.runtime.app.webhooks
    login(page, console, console.admin)
    page.goto(f"{console.url}/webhooks")
    page.locator("#webhook-url").fill(hooked.url)
    page.locator("#webhook-create").click()
    first = page.locator("#webhook-secret").inner_text().strip()
    [made] = ops.search(cli_principal())

    # Change: description, one event fewer, disabled.
    page.locator(f"#subscriptions tr[data-id='{made.id}'] a.manage").click()
    page.wait_for_url(f"{console.url}/webhooks/{made.id}")
    page.locator("#webhook-description").fill("inventory system")
    page.locator("input[name='event:certificate.expiring']").uncheck()
    page.locator("#webhook-enabled").uncheck()
    page.locator("#webhook-save").click()
    assert "Webhook saved." in page.get_by_role("status").inner_text()
    assert page.locator("#webhook-state").inner_text() == "disabled"
    changed = ops.show(cli_principal(), made.id)
    assert (changed.description, changed.enabled) == ("inventory system", False)
    assert "certificate.expiring" not in changed.events
    assert "provisioning.succeeded" in changed.events
    # A refused change is shown on the page and changes nothing.
    page.locator("#webhook-url").fill("http://example.com/hook")
    page.locator("#webhook-enabled").check()
    page.locator("#webhook-save").click()
    assert "https" in page.locator("#webhook-error").inner_text()
    assert ops.show(cli_principal(), made.id) == changed
    page.goto(f"{console.url}/webhooks/{made.id}")
    page.locator("#webhook-enabled").check()
    page.locator("#webhook-save").click()
    assert ops.show(cli_principal(), made.id).enabled

    # Rotate: a new secret, shown once, signs the next delivery.
    page.locator("#webhook-rotate button").click()
    second = page.locator("#webhook-secret").inner_text().strip()
    assert second.startswith("whsec_")
    assert second != first
    page.goto(f"{console.url}/webhooks/{made.id}")
    assert second not in page.content()
    hooked.secret = second
    factory = Factory(service, tmp_path, "fleet")
    assert factory.provision(factory.device("meter-1")).status_code == 200
    service.runtime.outbox.deliver(background=True)
    [delivered] = hooked.wait_for(1)
    assert delivered.signed

    # Another organization's admin can neither open nor delete it.
    other = console.add_user("admin@beta.example", "beta", Role.ADMIN)
    page.context.clear_cookies()
    login(page, console, other)
    answer = page.goto(f"{console.url}/webhooks/{made.id}/delete")
    assert answer is not None
    assert answer.status == 404
    page.context.clear_cookies()
    login(page, console, console.admin)

    # Delete, after a confirmation that names the receiver; without the CSRF token, no.
    page.goto(f"{console.url}/webhooks/{made.id}")
    page.locator("#webhook-delete").click()
    assert hooked.url in page.locator("main").inner_text()
    forged = page.request.post(f"{console.url}/webhooks/{made.id}/delete", form={"x": "1"})
    assert forged.status == 403
    page.locator("#webhook-delete-confirm button[type=submit]").click()
    page.wait_for_url(f"{console.url}/webhooks")
    assert "is deleted" in page.get_by_role("status").inner_text()
    assert ops.search(cli_principal()) == []

    actions = {
        (e.action, e.actor) for e in service.runtime.audit.search(AuditQuery(target_id=made.id))
    }
    actor = f"user:{console.admin.username}"
    for action in ("webhook.create", "webhook.update", "webhook.rotate_secret", "webhook.delete"):
        assert (action, actor) in actions, actions


def test_the_provisioning_hook_is_set_changed_and_removed_on_the_console(
    page: Any, console: Console, hooked: Receiver, tmp_path: Path, problems: Problems
) -> None:
    problems.expect("400")
    problems.expect("404")
    service = console.service
    login(page, console, console.admin)
    page.goto(f"{console.url}/webhooks")
    page.locator("#hook-org").select_option("acme")
    page.locator("#hook-url").fill(hooked.url)
    page.locator("#hook-timeout").fill("99")
    page.locator("#hook-set").click()
    assert "timeout" in page.locator("#hook-error").inner_text()
    assert service.runtime.webhook_store.hook("acme") is None

    page.locator("#hook-timeout").fill("2.5")
    page.locator("#hook-set").click()
    secret = page.locator("#hook-secret").inner_text().strip()
    assert secret.startswith("whsec_")
    hooked.secret = secret
    assert "timeout 2.5 s" in page.locator("#hooks tr[data-org=acme]").inner_text()
    # Changed from its row: the form holds the hook as it is, so changing one setting
    # keeps the others; the secret is kept (and not shown).
    page.locator("#hooks tr[data-org=acme] a.manage").click()
    assert page.locator("#hook-org").input_value() == "acme"
    assert page.locator("#hook-url").input_value() == hooked.url
    assert page.locator("#hook-timeout").input_value() == "2.5"
    page.locator("#hook-on-failure").select_option("allow")
    page.locator("#hook-set").click()
    assert "its secret is the same" in page.locator("#hook-created").inner_text()
    expect(page.locator("#hook-secret")).to_have_count(0)
    assert (
        "timeout 2.5 s, on failure allow" in page.locator("#hooks tr[data-org=acme]").inner_text()
    )
    # Another organization's hook (or none) is not there to change.
    page.goto(f"{console.url}/webhooks?hook=beta")
    assert "No provisioning hook of 'beta'" in page.locator("#hook-error").inner_text()

    # The hook is asked, signed with the secret the page showed, and its attributes kept.
    hooked.answer = {"decision": "allow", "claims": {"attributes": {"site": "berlin"}}}
    factory = Factory(service, tmp_path, "fleet")
    assert factory.provision(factory.device("meter-1")).status_code == 200
    [asked] = hooked.wait_for(1)
    assert asked.signed

    page.goto(f"{console.url}/webhooks")
    page.locator("#hooks tr[data-org=acme] button").click()
    assert "is removed" in page.get_by_role("status").inner_text()
    assert service.runtime.webhook_store.hook("acme") is None
    expect(page.locator("#provisioning-hooks .empty")).to_contain_text("No provisioning hook")
    expect(page.locator("#hooks")).to_have_count(0)
    entries = service.runtime.audit.search(AuditQuery(target_id="acme"))
    done = [(e.action, e.actor) for e in entries if e.action.startswith("provisioning_hook.")]
    actor = f"user:{console.admin.username}"
    assert done.count(("provisioning_hook.set", actor)) == 2
    assert ("provisioning_hook.remove", actor) in done
