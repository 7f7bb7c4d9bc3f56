"""The dashboard: the fleet at a glance, scoped to the user's organizations."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from imprint.app.scoping import scope_of
from imprint.console import queries
from imprint.console.chart import bar_chart
from imprint.console.pages import ConsoleRoute, ConsoleUser, render, runtime
from imprint.provisioning.devices import DeviceStatus
from imprint.runtime import Runtime
from imprint.tenancy.access import Principal

router = APIRouter(route_class=ConsoleRoute)


def _overview(rt: Runtime, user: Principal) -> dict[str, Any]:
    owners = scope_of(rt, user)
    now = rt.clock.now()
    by_status, by_org = queries.device_counts(rt.engine, owners)
    days = queries.attempts_per_day(rt.engine, owners, now)
    return {
        "statuses": [(s.value, by_status.get(s.value, 0)) for s in DeviceStatus],
        "total": sum(n for s, n in by_status.items() if s != DeviceStatus.RESET.value),
        "by_org": by_org,
        "chart": bar_chart(days),
        "attempts": sum(d.ok + d.failed for d in days),
        "attempts_failed": sum(d.failed for d in days),
        "expiring": queries.expiring_counts(rt.engine, owners, now),
        "failures": queries.recent_failures(rt.engine, owners),
    }


@router.get("/")
async def dashboard(request: Request, user: ConsoleUser) -> Response:
    context = await run_in_threadpool(_overview, runtime(request), user)
    return render(request, "dashboard.html", title="Dashboard", active="/console/", **context)
