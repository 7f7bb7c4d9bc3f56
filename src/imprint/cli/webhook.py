"""``imprint webhook ...``: subscriptions to an organization's events, their delivery
log, and the organization's provisioning hook (docs/webhooks.md)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer

from imprint.cli.calls import Api, perform
from imprint.cli.output import Column, OutputOption, render_done, render_item, render_page
from imprint.runtime import Runtime
from imprint.tenancy.access import Principal

app = typer.Typer(
    help="Webhooks: tell receivers about provisioning and certificates, and the "
    "provisioning hook that may allow, deny or add claims to a registration.",
    no_args_is_help=True,
)

COLUMNS = [
    Column("id", "id", key=True),
    Column("org", "org_id", key=True),
    Column("url", "url", key=True),
    Column("events", lambda w: ", ".join(w.get("events", []))),
    Column("enabled", "enabled"),
]
FIELDS = [
    *COLUMNS,
    Column("description", "description"),
    Column("created by", "created_by"),
    Column("created", "created_at"),
    Column("updated", "updated_at"),
]
SECRET_FIELDS = [*FIELDS, Column("secret", "secret", key=True)]
DELIVERY_COLUMNS = [
    Column("at", "at"),
    Column("event", "event_type"),
    Column("event id", "event_id", key=True),
    Column("attempt", "attempt"),
    Column("outcome", "outcome"),
    Column("status", "status_code"),
    Column("error", "error"),
    Column("ms", "duration_ms"),
]
HOOK_FIELDS = [
    Column("org", "org_id", key=True),
    Column("url", "url", key=True),
    Column("timeout (s)", "timeout_seconds"),
    Column("on failure", "on_failure"),
    Column("enabled", "enabled"),
    Column("updated", "updated_at"),
    Column("secret", "secret", key=True),
]

EventsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--event",
        "-e",
        help="An event to send (repeat): provisioning.succeeded, provisioning.failed, "
        "device.awaiting_approval, certificate.revoked, certificate.expiring",
    ),
]


def _out(model: Any) -> dict[str, Any]:
    dumped: dict[str, Any] = model.model_dump(mode="json")
    return dumped


def _path(webhook_id: str) -> str:
    return f"/api/v1/webhooks/{quote(webhook_id, safe='')}"


def _hook_path(org_id: str) -> str:
    return f"/api/v1/provisioning-hooks/{quote(org_id, safe='')}"


def _note_secret(item: dict[str, Any]) -> str:
    return f"signing secret (shown once; store it with the receiver): {item['secret']}"


@app.command("create")
def create(
    org: Annotated[str, typer.Option("--org", help="The organization whose events to send")],
    url: Annotated[str, typer.Option("--url", help="The receiver's https:// URL")],
    events: EventsOption = None,
    description: Annotated[str | None, typer.Option(help="A note for people")] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Create it disabled")] = False,
    output: OutputOption = None,
) -> None:
    """Subscribe a URL to events of an organization and its sub-organizations."""
    from imprint.api.routes.webhooks import IssuedWebhookOut

    chosen = list(events or [])

    def local(rt: Runtime, p: Principal) -> dict[str, Any]:
        issued = rt.app.webhooks.create(
            p, org, url, chosen, description=description, enabled=not disabled
        )
        return _out(IssuedWebhookOut.issued(issued))

    body = {
        "org_id": org,
        "url": url,
        "events": chosen,
        "description": description,
        "enabled": not disabled,
    }
    made = perform(local=local, remote=lambda api: api.post("/api/v1/webhooks", body))
    render_done(
        made, output, f"webhook {made['id']} created\n{_note_secret(made)}", fields=SECRET_FIELDS
    )


@app.command("list")
def list_webhooks(
    org: Annotated[str | None, typer.Option("--org", help="Only this organization's")] = None,
    output: OutputOption = None,
) -> None:
    """List the webhooks of the organizations you see."""
    from imprint.api.routes.webhooks import WebhookOut

    def local(rt: Runtime, p: Principal) -> dict[str, Any]:
        items = [_out(WebhookOut.of(s)) for s in rt.app.webhooks.search(p, org_id=org)]
        return {"items": items, "total": len(items), "next": None}

    page = perform(local=local, remote=lambda api: api.get("/api/v1/webhooks", org=org))
    render_page(page, COLUMNS, output, noun="webhook(s)")


@app.command("show")
def show(
    webhook_id: Annotated[str, typer.Argument(help="Webhook id")], output: OutputOption = None
) -> None:
    """One webhook (its secret is never shown again: rotate it to get a new one)."""
    from imprint.api.routes.webhooks import WebhookOut

    found = perform(
        local=lambda rt, p: _out(WebhookOut.of(rt.app.webhooks.show(p, webhook_id))),
        remote=lambda api: api.get(_path(webhook_id)),
    )
    render_item(found, output, fields=FIELDS)


@app.command("update")
def update(
    webhook_id: Annotated[str, typer.Argument(help="Webhook id")],
    url: Annotated[str | None, typer.Option("--url", help="A new https:// URL")] = None,
    events: EventsOption = None,
    description: Annotated[str | None, typer.Option(help="A new note")] = None,
    enabled: Annotated[
        bool | None, typer.Option("--enable/--disable", help="Turn deliveries on or off")
    ] = None,
    output: OutputOption = None,
) -> None:
    """Change a webhook's URL, events, description, or turn it on or off."""
    from imprint.api.routes.webhooks import WebhookOut
    from imprint.app.webhooks import SubscriptionPatch

    patch = SubscriptionPatch(
        url=url, events=list(events) if events else None, enabled=enabled, description=description
    )
    body = {
        k: v
        for k, v in {
            "url": url,
            "events": patch.events,
            "enabled": enabled,
            "description": description,
        }.items()
        if v is not None
    }
    done = perform(
        local=lambda rt, p: _out(WebhookOut.of(rt.app.webhooks.update(p, webhook_id, patch))),
        remote=lambda api: api.patch(_path(webhook_id), body),
    )
    render_done(done, output, f"webhook {done['id']} updated", fields=FIELDS)


@app.command("rotate-secret")
def rotate_secret(
    webhook_id: Annotated[str, typer.Argument(help="Webhook id")], output: OutputOption = None
) -> None:
    """Give a webhook a new signing secret; the old one stops at once."""
    from imprint.api.routes.webhooks import IssuedWebhookOut

    done = perform(
        local=lambda rt, p: _out(
            IssuedWebhookOut.issued(rt.app.webhooks.rotate_secret(p, webhook_id))
        ),
        remote=lambda api: api.post(f"{_path(webhook_id)}/rotate-secret"),
    )
    render_done(done, output, _note_secret(done), fields=SECRET_FIELDS)


@app.command("delete")
def delete(
    webhook_id: Annotated[str, typer.Argument(help="Webhook id")], output: OutputOption = None
) -> None:
    """Delete a webhook: deliveries not made yet are dropped; its log stays."""
    perform(
        local=lambda rt, p: rt.app.webhooks.delete(p, webhook_id),
        remote=lambda api: api.delete(_path(webhook_id)),
    )
    render_done({"id": webhook_id, "deleted": True}, output, f"webhook {webhook_id} deleted")


@app.command("deliveries")
def deliveries(
    webhook_id: Annotated[
        str | None, typer.Argument(help="Webhook id (default: every webhook you see)")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many")] = 100,
    before: Annotated[
        int | None, typer.Option(help="Older than this attempt id (a page's next)")
    ] = None,
    output: OutputOption = None,
) -> None:
    """The delivery log, newest first: each attempt's time, event, outcome and status."""
    from imprint.api.routes.webhooks import DeliveryOut

    def local(rt: Runtime, p: Principal) -> dict[str, Any]:
        found = rt.app.webhooks.deliveries(
            p, subscription_id=webhook_id, limit=limit, before=before
        )
        items = [_out(DeliveryOut.of(d)) for d in found]
        more = len(items) == limit and items
        return {"items": items, "next": str(items[-1]["id"]) if more else None}

    def remote(api: Api) -> dict[str, Any]:
        path = (
            "/api/v1/webhook-deliveries"
            if webhook_id is None
            else f"{_path(webhook_id)}/deliveries"
        )
        page: dict[str, Any] = api.get(path, limit=limit, before=before)
        return page

    page = perform(local=local, remote=remote)
    page.setdefault("total", len(page["items"]))
    render_page(page, DELIVERY_COLUMNS, output, noun="attempt(s)")


hook_app = typer.Typer(
    help="An organization's provisioning hook: asked before a registration is signed.",
    no_args_is_help=True,
)
app.add_typer(hook_app, name="hook")


@hook_app.command("set")
def set_hook(
    org: Annotated[str, typer.Option("--org", help="The organization")],
    url: Annotated[str, typer.Option("--url", help="The hook's https:// URL")],
    timeout: Annotated[
        float, typer.Option(min=0.5, max=30, help="Seconds to wait for its answer")
    ] = 5.0,
    on_failure: Annotated[
        str, typer.Option(help="deny (default) or allow when it times out or fails")
    ] = "deny",
    disabled: Annotated[bool, typer.Option("--disabled", help="Keep it, but don't ask it")] = False,
    rotate_secret: Annotated[bool, typer.Option(help="Make a new signing secret")] = False,
    output: OutputOption = None,
) -> None:
    """Set (or change) an organization's provisioning hook."""
    from imprint.api.routes.webhooks import HookOut
    from imprint.app.webhooks import HookSpec

    if on_failure not in ("deny", "allow"):
        raise typer.BadParameter("deny or allow", param_hint="--on-failure")
    failure: Any = on_failure
    spec = HookSpec(url, timeout, failure, not disabled)
    body = {
        "url": url,
        "timeout_seconds": timeout,
        "on_failure": on_failure,
        "enabled": not disabled,
        "rotate_secret": rotate_secret,
    }
    done = perform(
        local=lambda rt, p: _out(
            HookOut.issued(rt.app.webhooks.set_hook(p, org, spec, rotate_secret=rotate_secret))
        ),
        remote=lambda api: api.put(_hook_path(org), body),
    )
    message = f"provisioning hook of {org} set"
    if done.get("secret"):
        message += f"\n{_note_secret(done)}"
    render_done(done, output, message, fields=HOOK_FIELDS)


@hook_app.command("show")
def show_hook(
    org: Annotated[str, typer.Option("--org", help="The organization")],
    output: OutputOption = None,
) -> None:
    """An organization's provisioning hook."""
    from imprint.api.routes.webhooks import HookOut

    found = perform(
        local=lambda rt, p: _out(HookOut.of(rt.app.webhooks.hook(p, org))),
        remote=lambda api: api.get(_hook_path(org)),
    )
    render_item(found, output, fields=HOOK_FIELDS[:-1])


@hook_app.command("remove")
def remove_hook(
    org: Annotated[str, typer.Option("--org", help="The organization")],
    output: OutputOption = None,
) -> None:
    """Remove an organization's provisioning hook: registrations no longer ask it."""
    perform(
        local=lambda rt, p: rt.app.webhooks.remove_hook(p, org),
        remote=lambda api: api.delete(_hook_path(org)),
    )
    render_done({"org_id": org, "removed": True}, output, f"provisioning hook of {org} removed")
