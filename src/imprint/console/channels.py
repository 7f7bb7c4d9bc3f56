"""Channels: the data channels of your organizations' devices, their keys, live charts.

Read keys are shown to members of the channel's organization (and above it); the write
key only to operators and admins; another organization's channel is a 404 page. The
chart polls ``/console/channels/{id}/entries.json`` (same-origin, session cookie) and
draws each field on a ``<canvas>`` with plain JavaScript (static/channels.js).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from imprint.api.routes import channels as channels_api
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
from imprint.tenancy.access import Principal, authorize
from imprint.tenancy.roles import Role

router = APIRouter(route_class=ConsoleRoute)

PAGE = "/console/channels"


@router.get("/channels")
async def channel_list(request: Request, user: ConsoleUser) -> Response:
    rt = runtime_of(request)
    found = await run_in_threadpool(channels_api.list_channels, rt, user, 500, None)
    return render(request, "channels.html", title="Channels", active=PAGE, channels=found.items)


def _detail(rt: Runtime, user: Principal, channel_id: int) -> channels_api.ChannelDetail:
    return channels_api.show_channel(channel_id, rt, user, Response())


def _check_id(channel_id: int) -> int:
    if not 1 <= channel_id <= 2**31 - 1:
        raise InvalidValue("no such channel id")
    return channel_id


@router.get("/channels/{channel_id}")
async def channel_page(channel_id: int, request: Request, user: ConsoleUser) -> Response:
    rt = runtime_of(request)
    detail = await run_in_threadpool(_detail, rt, user, _check_id(channel_id))
    role = authorize(user, detail.owner, Role.VIEWER, rt.org_tree(), what="channel")
    return render(
        request,
        "channel.html",
        title=f"Channel {detail.name}",
        active=PAGE,
        channel=detail,
        operator=role.allows(Role.OPERATOR),
    )


def _entries(rt: Runtime, user: Principal, channel_id: int, results: int) -> dict[str, object]:
    channel = rt.channels.get(channel_id)
    authorize(user, channel.owner, Role.VIEWER, rt.org_tree(), what=f"channel {channel_id}")
    entries = rt.channel_entries.latest(channel.id, results)
    return {
        "fields": dict(channel.fields),
        "last_entry_id": entries[-1].entry_id if entries else 0,
        "entries": [
            {
                "entry_id": e.entry_id,
                "created_at": e.created_at.isoformat(),
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
    results: Annotated[int, Query(ge=1, le=500)] = 100,
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
        await run_in_threadpool(channels_api.add_read, channel_id, rt, user, Response())
        text = "A read key was added."
    elif action in {"read", "write"}:
        key_id = form.get("key_id") or None
        if key_id is not None and len(key_id) > 36:
            raise InvalidValue("key_id: too long")
        await run_in_threadpool(
            channels_api.regenerate, channel_id, KeyKind(action), rt, user, Response(), key_id
        )
        text = f"The {action} key was regenerated: the old one no longer works."
    else:
        raise InvalidValue("action: add-read, read or write")
    response = redirect(f"{PAGE}/{channel_id}")
    flash(request, response, text)
    return response
