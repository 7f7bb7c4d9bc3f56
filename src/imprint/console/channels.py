"""Channels: the data channels of your organizations' devices, their keys, live charts.

Read keys are shown to members of the channel's organization (and above it); the write
key only to operators and admins; another organization's channel is a 404 page. The
page carries its latest entries as JSON (and as a table for readers without JavaScript);
static/charts.js draws each field with uPlot on a UTC time axis and polls
``/console/channels/{id}/entries.json`` (same-origin, session cookie) every 5 seconds.
"""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from imprint.app.channels import ChannelView
from imprint.console.chart import json_block
from imprint.console.pages import (
    HEADERS,
    ConsoleRoute,
    ConsoleUser,
    flash,
    form_of,
    redirect,
    render,
)
from imprint.console.pages import runtime as runtime_of
from imprint.errors import InvalidValue
from imprint.provisioning.channels import KeyKind
from imprint.runtime import Runtime
from imprint.tenancy.access import Principal

router = APIRouter(route_class=ConsoleRoute)

PAGE = "/console/channels"


@router.get("/channels")
async def channel_list(request: Request, user: ConsoleUser) -> Response:
    rt = runtime_of(request)
    found = await run_in_threadpool(rt.app.channels.search, user, limit=500)
    return render(request, "channels.html", title="Channels", active=PAGE, channels=found)


def _shown(view: ChannelView) -> dict[str, object]:
    """What channel.html shows: the channel, its entry count, the write key only to
    operators and admins."""
    channel = view.channel
    return {
        "id": channel.id,
        "name": channel.name,
        "owner": channel.owner,
        "device_ref": channel.device_ref,
        "device_id": channel.device_id,
        "fields": dict(channel.fields),
        "read_keys": channel.read_keys,
        "write_key": channel.write_key if view.shows_write_key else None,
        "last_entry_id": view.last_entry_id,
    }


def _check_id(channel_id: int) -> int:
    if not 1 <= channel_id <= 2**31 - 1:
        raise InvalidValue("no such channel id")
    return channel_id


# Entries the page carries and polls: its charts show at most this many.
CHART_ENTRIES = 100


def _channel_page(
    rt: Runtime, user: Principal, channel_id: int
) -> tuple[ChannelView, dict[str, Any]]:
    view = rt.app.channels.show(user, channel_id)
    return view, _entries(rt, user, channel_id, CHART_ENTRIES)


@router.get("/channels/{channel_id}")
async def channel_page(channel_id: int, request: Request, user: ConsoleUser) -> Response:
    rt = runtime_of(request)
    view, data = await run_in_threadpool(_channel_page, rt, user, _check_id(channel_id))
    return render(
        request,
        "channel.html",
        title=f"Channel {view.channel.name}",
        active=PAGE,
        channel=_shown(view),
        operator=view.shows_write_key,
        chart_data=json_block("channel-data", data),
        latest=list(reversed(data["entries"][-10:])),
        chart_limit=CHART_ENTRIES,
    )


def _entries(rt: Runtime, user: Principal, channel_id: int, results: int) -> dict[str, Any]:
    channel, entries = rt.app.channels.entries(user, channel_id, results)
    return {
        "fields": dict(channel.fields),
        "last_entry_id": entries[-1].entry_id if entries else 0,
        "entries": [
            {
                "entry_id": e.entry_id,
                "created_at": e.created_at.astimezone(UTC).isoformat(),
                **{name: e.fields.get(name) for name in channel.fields},
            }
            for e in entries
        ],
    }


@router.get("/channels/{channel_id}/entries.json")
async def channel_entries(
    channel_id: int,
    request: Request,
    user: ConsoleUser,
    results: Annotated[int, Query(ge=1, le=500)] = CHART_ENTRIES,
) -> Response:
    data = await run_in_threadpool(
        _entries, runtime_of(request), user, _check_id(channel_id), results
    )
    return JSONResponse(data, headers=HEADERS)


@router.post("/channels/{channel_id}/keys")
async def regenerate(channel_id: int, request: Request, user: ConsoleUser) -> Response:
    form = await form_of(request)
    rt = runtime_of(request)
    channel_id = _check_id(channel_id)
    action = form.get("action", "")
    if action == "add-read":
        await run_in_threadpool(rt.app.channels.add_read_key, user, channel_id)
        text = "A read key was added."
    elif action in {"read", "write"}:
        key_id = form.get("key_id") or None
        if key_id is not None and len(key_id) > 36:
            raise InvalidValue("key_id: too long")
        await run_in_threadpool(
            rt.app.channels.regenerate_key, user, channel_id, KeyKind(action), key_id
        )
        text = f"The {action} key was regenerated: the old one no longer works."
    else:
        raise InvalidValue("action: add-read, read or write")
    response = redirect(f"{PAGE}/{channel_id}")
    flash(request, response, text)
    return response
