"""ThingSpeak's channel API, on imprint's channels: ``/update`` and the feed reads.

Firmware and libraries written for ThingSpeak work when pointed at imprint:

* ``GET|POST /update`` answers as ThingSpeak does, in plain text: the new entry's id,
  or ``0`` when nothing was stored (HTTP 200 when the channel's rate limit refused it,
  a 4xx status for anything else). ``/update.json`` answers with the entry, or
  problem+json with a stable code (429 for the rate limit).
* The write key comes as the ``api_key`` parameter or in a ``THINGSPEAKAPIKEY`` (or
  ``X-THINGSPEAKAPIKEY``) header. Without a key, the device's client certificate
  names the channel (see :mod:`imprint.api.channel_access`).
* Reads (:mod:`imprint.api.routes.thingspeak_reads`) need one of the channel's read
  keys, the same two ways.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from imprint.api.channel_access import device_channel
from imprint.api.device_plane import run_blocking
from imprint.api.identity import runtime_of
from imprint.api.problems import status_of
from imprint.channels.entries import (
    ChannelKeyInvalid,
    ChannelRateLimited,
    Entry,
    thingspeak_draft,
)
from imprint.errors import ImprintError, InvalidRequest, InvalidValue
from imprint.provisioning.channels import FIELD_NAMES, KeyKind, find_by_key
from imprint.runtime import Runtime

router = APIRouter(tags=["channels"])

KEY_HEADERS = ("thingspeakapikey", "x-thingspeakapikey")
_URLENCODED = "application/x-www-form-urlencoded"
_MULTIPART = "multipart/form-data"
#: Fields a form may have (Starlette's limit for the forms it parses).
_MAX_FORM_FIELDS = 1000


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


def urlencoded_fields(body: bytes) -> list[tuple[str, str]]:
    """A urlencoded form's fields, read as Starlette's form parser reads them (the bytes
    as Latin-1, each name and value then unquoted as UTF-8, "+" a space, empty parts
    skipped) without that parser's work byte by byte: about 20 µs of a write's 330
    (bench/README.md, step 47).

    Raises:
        InvalidValue: more than :data:`_MAX_FORM_FIELDS` fields (Starlette's limit).
    """
    fields = parse_qsl(body.decode("latin-1"), keep_blank_values=True)
    if len(fields) > _MAX_FORM_FIELDS:
        raise InvalidValue(f"a form of at most {_MAX_FORM_FIELDS} fields")
    return fields


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
    elif media == _URLENCODED:
        merged.update(urlencoded_fields(await request.body()))
    elif media == _MULTIPART:
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
        entry = await run_blocking(runtime, _write, runtime, request, params)
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
    entry = await run_blocking(runtime, _write, runtime, request, params)
    return JSONResponse(entry_json(entry))
