"""The dashboard: the fleet at a glance, scoped to the user's organizations."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from imprint.app.scoping import scope_of
from imprint.console import queries
from imprint.console.chart import daily_attempts, json_block
from imprint.console.pages import ConsoleRoute, ConsoleUser, render, runtime
from imprint.provisioning.devices import DeviceStatus
from imprint.runtime import Runtime
from imprint.tenancy.access import Principal

router = APIRouter(route_class=ConsoleRoute)


def _overview(rt: Runtime, user: Principal) -> dict[str, Any]:
    owners = scope_of(rt, user)
    now = rt.clock.now()
    by_status, by_org = queries.device_counts(rt.engine, owners)
    chart = daily_attempts(queries.attempts_per_day(rt.engine, owners, now))
    return {
        "statuses": [(s.value, by_status.get(s.value, 0)) for s in DeviceStatus],
        "total": sum(n for s, n in by_status.items() if s != DeviceStatus.RESET.value),
        "by_org": by_org,
        "chart": chart,
        "chart_data": json_block("attempts-data", chart.data()),
        "attempts": chart.succeeded + chart.failed,
        "attempts_failed": chart.failed,
        "expiring": queries.expiring_counts(rt.engine, owners, now),
        "failures": queries.recent_failures(rt.engine, owners),
    }


@router.get("/")
async def dashboard(request: Request, user: ConsoleUser) -> Response:
    context = await run_in_threadpool(_overview, runtime(request), user)
    return render(request, "dashboard.html", title="Dashboard", active="/console/", **context)
