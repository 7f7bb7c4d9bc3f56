"""The audit log: filterable, newest first, paged with its total, exported as CSV (admins,
of their organizations).

A viewer of the whole instance may also verify the log's hash chain from here
(``?verify=1``): it reads every entry, so it runs when asked, not on every page.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from imprint.audit import REASONS, AuditQuery
from imprint.console import queries
from imprint.console.devices import org_names
from imprint.console.listing import Pager, csv_response
from imprint.console.pages import ConsoleRoute, ConsoleUser, redirect, render, runtime
from imprint.errors import InvalidValue
from imprint.store.audit import AUDIT_SORT as AUDIT_SORT_KEYS
from imprint.store.listing import Order

router = APIRouter(route_class=ConsoleRoute)

Text = Annotated[str | None, Query(max_length=200)]


def _day(value: str | None, end: bool) -> datetime | None:
    if not value:
        return None
    try:
        day = datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise InvalidValue(f"{value!r} is not a date (YYYY-MM-DD)") from None
    return datetime.combine(day, time.max if end else time.min, UTC)


def _filters(
    action: str | None,
    actor: str | None,
    target: str | None,
    org: str | None,
    outcome: str | None,
    since: str | None,
    until: str | None,
) -> dict[str, str]:
    return {
        "action": (action or "").strip(),
        "actor": (actor or "").strip(),
        "target": (target or "").strip(),
        "org": (org or "").strip(),
        "outcome": outcome if outcome in ("success", "failure") else "",
        "since": (since or "").strip(),
        "until": (until or "").strip(),
    }


def _query(filters: dict[str, str], **paging: Any) -> AuditQuery:
    return AuditQuery(
        actor=filters["actor"] or None,
        action=filters["action"] or None,
        target_id=filters["target"] or None,
        outcome=filters["outcome"] or None,
        since=_day(filters["since"], end=False),
        until=_day(filters["until"], end=True),
        **paging,
    )


#: The audit log's orders (the store's whitelist): by entry, newest first by default.
AUDIT_SORT = {f"{sign}{key}" for key in AUDIT_SORT_KEYS.columns for sign in ("", "-")}


@router.get("/audit")
async def audit_log(
    request: Request,
    user: ConsoleUser,
    action: Text = None,
    actor: Text = None,
    target: Text = None,
    org: Text = None,
    outcome: Text = None,
    since: Text = None,
    until: Text = None,
    sort: Text = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    verify: bool = False,
) -> Response:
    rt = runtime(request)
    filters = _filters(action, actor, target, org, outcome, since, until)
    order = Order.parse(sort if sort in AUDIT_SORT else None, Order("at", descending=True))

    def load() -> dict[str, Any]:
        scope = rt.app.audit.scope(user)
        # The chain spans every organization: only the whole instance's viewer checks it.
        chain = rt.app.audit.verify(user) if verify and scope is None else None
        names = org_names(rt)
        visible = sorted(scope) if scope is not None else sorted(names)
        pager = Pager("/console/audit", {**filters, "sort": sort or ""}, page, 0, order)
        found = rt.app.audit.page(
            user,
            _query(
                filters,
                limit=pager.size,
                offset=pager.offset,
                order=order,
            ),
            org=filters["org"] or None,
        )
        users = {e.target_id for e in found.items if e.target_type == "user" and e.target_id}
        return {
            "entries": found.items,
            "pager": replace(pager, total=found.total, default_descending=("at",)),
            "orgs": [(o, names.get(o, o)) for o in visible],
            "org_names": names,
            "user_names": queries.user_names(rt.engine, users),
            "chain": chain,
        }

    context = await run_in_threadpool(load)
    if context["pager"].beyond:
        return redirect(context["pager"].beyond)
    return render(
        request,
        "audit.html",
        title="Audit log",
        active="/console/audit",
        details=lambda e: json.dumps(dict(e.details), sort_keys=True) if e.details else "",
        filters=filters,
        filtered=any(filters.values()),
        can_verify=user.instance_admin,
        reasons=REASONS,
        **context,
    )


_EXPORT_CHUNK = 500


@router.get("/audit.csv")
async def audit_export(
    request: Request,
    user: ConsoleUser,
    action: Text = None,
    actor: Text = None,
    target: Text = None,
    org: Text = None,
    outcome: Text = None,
    since: Text = None,
    until: Text = None,
    sort: Text = None,
) -> Response:
    """The entries that match, in the list's order (its ``sort``; any other newest
    first), read a chunk at a time after the previous chunk's last entry."""
    rt = runtime(request)
    filters = _filters(action, actor, target, org, outcome, since, until)
    order = Order.parse(sort if sort in AUDIT_SORT else None, Order("at", descending=True))
    # The scope is checked here, so a refusal is an error page, not a broken download.
    entries = await run_in_threadpool(
        rt.app.audit.each,
        user,
        _query(filters, order=order),
        filters["org"] or None,
        _EXPORT_CHUNK,
    )

    def rows() -> Iterator[tuple[object, ...]]:
        for e in entries:
            yield (
                e.id,
                e.at,
                e.actor,
                e.action,
                e.target_type,
                e.target_id,
                e.org_id,
                e.outcome,
                json.dumps(dict(e.details), sort_keys=True) if e.details else "",
            )

    return csv_response(
        "audit.csv",
        ["id", "at", "actor", "action", "target_type", "target_id", "org", "outcome", "details"],
        rows(),
    )
