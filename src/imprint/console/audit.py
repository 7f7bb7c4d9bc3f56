"""The audit log: filterable, newest first, paginated (admins, of their organizations).

A viewer of the whole instance may also verify the log's hash chain from here
(``?verify=1``): it reads every entry, so it runs when asked, not on every page.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, time
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from imprint.audit import REASONS, AuditEntry, AuditQuery, ChainReport
from imprint.console.pages import ConsoleRoute, ConsoleUser, render, runtime
from imprint.errors import InvalidValue

router = APIRouter(route_class=ConsoleRoute)

PAGE_SIZE = 50
Text = Annotated[str | None, Query(max_length=200)]


def _day(value: str | None, end: bool) -> datetime | None:
    if not value:
        return None
    try:
        day = datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise InvalidValue(f"{value!r} is not a date (YYYY-MM-DD)") from None
    return datetime.combine(day, time.max if end else time.min, UTC)


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
    before: Annotated[int | None, Query(ge=1)] = None,
    verify: bool = False,
) -> Response:
    rt = runtime(request)
    filters = {
        "action": (action or "").strip(),
        "actor": (actor or "").strip(),
        "target": (target or "").strip(),
        "org": (org or "").strip(),
        "outcome": outcome if outcome in ("success", "failure") else "",
        "since": (since or "").strip(),
        "until": (until or "").strip(),
    }

    def load() -> tuple[list[AuditEntry], list[str], ChainReport | None]:
        scope = rt.app.audit.scope(user)
        # The chain spans every organization: only the whole instance's viewer checks it.
        chain = rt.app.audit.verify(user) if verify and scope is None else None
        visible = sorted(scope) if scope is not None else sorted(rt.org_tree().orgs)
        found = rt.app.audit.search(
            user,
            AuditQuery(
                actor=filters["actor"] or None,
                action=filters["action"] or None,
                target_id=filters["target"] or None,
                outcome=filters["outcome"] or None,
                since=_day(filters["since"], end=False),
                until=_day(filters["until"], end=True),
                before_id=before,
                limit=PAGE_SIZE + 1,
            ),
            org=filters["org"] or None,
        )
        return list(found), visible, chain

    entries, orgs, chain = await run_in_threadpool(load)
    more = len(entries) > PAGE_SIZE
    entries = entries[:PAGE_SIZE]
    return render(
        request,
        "audit.html",
        title="Audit log",
        active="/console/audit",
        entries=entries,
        details=lambda e: json.dumps(dict(e.details), sort_keys=True) if e.details else "",
        next_url=(
            "/console/audit?"
            + urlencode({**{k: v for k, v in filters.items() if v}, "before": entries[-1].id})
            if more and entries
            else None
        ),
        filters=filters,
        filtered=any(filters.values()),
        orgs=orgs,
        first_page=before is None,
        can_verify=user.instance_admin,
        chain=chain,
        reasons=REASONS,
    )
