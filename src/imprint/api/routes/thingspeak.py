"""ThingSpeak's channel API, on imprint's channels: ``/update`` and the feed reads.

Firmware and libraries written for ThingSpeak work when pointed at imprint:

* ``GET|POST /update`` answers as ThingSpeak does, in plain text: the new entry's id,
  or ``0`` when nothing was stored (HTTP 200 when the channel's rate limit refused it,
  a 4xx status for anything else). ``/update.json`` answers with the entry, or
  problem+json with a stable code (429 for the rate limit).
* The write key comes as the ``api_key`` parameter or in a ``THINGSPEAKAPIKEY`` (or
  ``X-THINGSPEAKAPIKEY``) header. Without a key, the device's client certificate
  names the channel (see :mod:`imprint.api.channel_access`).
* Reads need one of the channel's read keys, the same two ways.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from imprint.api.channel_access import device_channel
from imprint.api.identity import RuntimeDep, runtime_of
from imprint.api.params import MAX_ROW_ID
from imprint.api.problems import status_of
from imprint.channels.entries import (
    MAX_RESULTS,
    ChannelKeyInvalid,
    ChannelRateLimited,
    Entry,
    UnknownChannelField,
    thingspeak_draft,
)
from imprint.errors import ImprintError, InvalidRequest, InvalidValue
from imprint.provisioning.channels import FIELD_NAMES, Channel, KeyKind, find_by_key
from imprint.runtime import Runtime

router = APIRouter(tags=["channels"])

KEY_HEADERS = ("thingspeakapikey", "x-thingspeakapikey")
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class UnsupportedMediaType(InvalidRequest):
    code = "media_type_unsupported"


def timestamp(at: datetime) -> str:
    """ThingSpeak's time format: UTC to the second, with a ``Z``."""
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def header_key(request: Request) -> str | None:
    for name in KEY_HEADERS:
        value = request.headers.get(name)
        if value:
            return value
    return None


async def _parameters(request: Request) -> dict[str, str]:
    """Query parameters, plus a POST body as a form or a JSON object (the body wins)."""
    merged: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        merged.setdefault(name, value)
    if request.method != "POST":
        return merged
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "application/json":
        try:
            body = await request.json()
        except ValueError:
            raise InvalidValue("the body is not JSON") from None
        if not isinstance(body, dict):
            raise InvalidValue("the JSON body must be an object")
        for name, value in body.items():
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise InvalidValue(f"{str(name)[:40]!r}: a string or a number")
            merged[str(name)] = str(value)
    elif media in _FORM_TYPES:
        form = await request.form()
        for name, item in form.multi_items():
            if not isinstance(item, str):
                raise InvalidValue(f"{name[:40]!r}: a value, not a file")
            merged[name] = item
    elif await request.body():
        raise UnsupportedMediaType(
            "send the update as application/x-www-form-urlencoded or application/json"
        )
    return merged


def _write(runtime: Runtime, request: Request, params: dict[str, str]) -> Entry:
    key = params.pop("api_key", None) or header_key(request)
    if key is not None:
        channel = find_by_key(runtime.channels, key, KeyKind.WRITE)
        if channel is None:
            raise ChannelKeyInvalid("the write key does not open any channel")
    else:
        channel = device_channel(request, runtime, lambda fields: thingspeak_draft(fields, params))
    draft = thingspeak_draft(channel.fields, params)
    interval = timedelta(seconds=runtime.settings.channels.min_write_interval_seconds)
    return runtime.channel_entries.append(channel.id, draft, min_interval=interval)


def entry_json(entry: Entry) -> dict[str, Any]:
    """The entry as ``/update.json`` answers it: every field, null where unset."""
    return {
        "channel_id": entry.channel_id,
        "created_at": timestamp(entry.created_at),
        "entry_id": entry.entry_id,
        **{name: entry.fields.get(name) for name in FIELD_NAMES},
        "latitude": entry.latitude,
        "longitude": entry.longitude,
        "elevation": entry.elevation,
        "status": entry.status,
    }


_TEXT_SUMMARY = "Write an entry (ThingSpeak text answer: the entry id, or 0)"
_JSON_SUMMARY = "Write an entry (JSON answer: the entry, or problem+json)"


@router.get("/update", summary=_TEXT_SUMMARY, response_class=PlainTextResponse)
@router.post(
    "/update",
    summary=_TEXT_SUMMARY,
    response_class=PlainTextResponse,
    operation_id="update_text_post",
)
async def update_text(request: Request) -> Response:
    runtime = runtime_of(request)
    try:
        params = await _parameters(request)
        entry = await run_in_threadpool(_write, runtime, request, params)
    except ChannelRateLimited as exc:
        return PlainTextResponse("0", headers={"Retry-After": str(exc.retry_after)})
    except ImprintError as exc:
        return PlainTextResponse("0", status_code=status_of(exc))
    return PlainTextResponse(str(entry.entry_id))


@router.get("/update.json", summary=_JSON_SUMMARY)
@router.post("/update.json", summary=_JSON_SUMMARY, operation_id="update_json_post")
async def update_json(request: Request) -> JSONResponse:
    runtime = runtime_of(request)
    params = await _parameters(request)
    entry = await run_in_threadpool(_write, runtime, request, params)
    return JSONResponse(entry_json(entry))


def readable_channel(
    runtime: Runtime, request: Request, channel_id: int, key: str | None
) -> Channel:
    """The channel, if ``key`` (or the key header) is one of its read keys.

    Raises:
        ChannelKeyInvalid: no key, or not a read key of this channel (whether or not
            the channel exists: ids are not confirmed to someone without a key).
    """
    key = key or header_key(request)
    channel = None if key is None else find_by_key(runtime.channels, key, KeyKind.READ)
    if channel is None or channel.id != channel_id:
        raise ChannelKeyInvalid(f"give a read key of channel {channel_id} as api_key")
    return channel


def channel_json(channel: Channel, last_entry_id: int) -> dict[str, Any]:
    return {
        "id": channel.id,
        "name": channel.name,
        **{name: channel.fields[name] for name in FIELD_NAMES if name in channel.fields},
        "created_at": timestamp(channel.created_at),
        "updated_at": timestamp(channel.updated_at),
        "last_entry_id": last_entry_id,
    }


def feed_json(
    entry: Entry, names: list[str], *, status: bool = False, location: bool = False
) -> dict[str, Any]:
    """One feed entry with the channel's fields (``names``), as ThingSpeak lists them."""
    item: dict[str, Any] = {
        "created_at": timestamp(entry.created_at),
        "entry_id": entry.entry_id,
        **{name: entry.fields.get(name) for name in names},
    }
    if location:
        item.update(latitude=entry.latitude, longitude=entry.longitude, elevation=entry.elevation)
    if status:
        item["status"] = entry.status
    return item


ChannelId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
FieldNumber = Annotated[int, Path(ge=1, le=8)]
ApiKey = Annotated[str | None, Query(max_length=64)]
Results = Annotated[int, Query(ge=1, le=MAX_RESULTS)]


def _field_name(channel: Channel, number: int) -> str:
    name = f"field{number}"
    if name not in channel.fields:
        raise UnknownChannelField(f"channel {channel.id} has no {name}")
    return name


@router.get("/channels/{channel_id}/feeds.json", summary="The newest entries of a channel")
def feeds(
    channel_id: ChannelId,
    request: Request,
    runtime: RuntimeDep,
    api_key: ApiKey = None,
    results: Results = 100,
    status: bool = False,
    location: bool = False,
) -> JSONResponse:
    channel = readable_channel(runtime, request, channel_id, api_key)
    names = sorted(channel.fields)
    entries = runtime.channel_entries.latest(channel.id, results)
    body = {
        "channel": channel_json(channel, runtime.channel_entries.last_entry_id(channel.id)),
        "feeds": [feed_json(e, names, status=status, location=location) for e in entries],
    }
    return JSONResponse(body)


@router.get("/channels/{channel_id}/feeds/last.json", summary="The newest entry (-1: none)")
def last_entry(
    channel_id: ChannelId,
    request: Request,
    runtime: RuntimeDep,
    api_key: ApiKey = None,
    status: bool = False,
    location: bool = False,
) -> JSONResponse:
    channel = readable_channel(runtime, request, channel_id, api_key)
    found = runtime.channel_entries.latest(channel.id, 1)
    if not found:
        return JSONResponse(-1)
    return JSONResponse(
        feed_json(found[0], sorted(channel.fields), status=status, location=location)
    )


@router.get("/channels/{channel_id}/fields/{number}.json", summary="The newest values of one field")
def field_feed(
    channel_id: ChannelId,
    number: FieldNumber,
    request: Request,
    runtime: RuntimeDep,
    api_key: ApiKey = None,
    results: Results = 100,
) -> JSONResponse:
    channel = readable_channel(runtime, request, channel_id, api_key)
    name = _field_name(channel, number)
    entries = runtime.channel_entries.latest(channel.id, results)
    body = {
        "channel": channel_json(channel, runtime.channel_entries.last_entry_id(channel.id)),
        "feeds": [feed_json(e, [name]) for e in entries],
    }
    return JSONResponse(body)


@router.get(
    "/channels/{channel_id}/fields/{number}/last.json",
    summary="The newest value of one field (-1: none)",
)
def field_last(
    channel_id: ChannelId,
    number: FieldNumber,
    request: Request,
    runtime: RuntimeDep,
    api_key: ApiKey = None,
) -> JSONResponse:
    channel = readable_channel(runtime, request, channel_id, api_key)
    name = _field_name(channel, number)
    found = runtime.channel_entries.latest(channel.id, 1)
    return JSONResponse(feed_json(found[0], [name]) if found else -1)
