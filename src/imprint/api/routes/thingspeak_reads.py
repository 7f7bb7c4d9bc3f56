"""ThingSpeak's read API on imprint's channels, as ThingSpeak's REST documentation and
the ``thingspeak`` PyPI client use it.

Every read needs one of the channel's read keys, as ``api_key`` or in a
``THINGSPEAKAPIKEY`` header; a wrong key, or a key of another channel, answers 401 (the
channel's existence is not confirmed). Times are UTC.

==============================================  ==========================================
``/channels/{id}.json|.xml``                    the channel (``Channel.view``)
``/channels/{id}/feeds.json|.csv|.xml``         entries (``Channel.get``; no extension: CSV)
``/channels/{id}/fields/{n}.json|.csv|.xml``    one field's entries (``Channel.get_field``)
``/channels/{id}/feeds/last.json|.xml|.txt``    the newest entry (``-1``: none)
``/channels/{id}/fields/{n}/last.json|.xml|.txt`` one field's newest value
``/channels/{id}/feeds/last_data_age.json``     seconds since the newest entry
``/channels/{id}/fields/{n}/last_data_age.json`` (``Channel.get_last_data_age``)
``/channels/{id}/status.json``                  the entries' status updates
``/channels/{id}/charts/{n}``                   a chart of one field (HTML with an SVG)
==============================================  ==========================================

Feeds take ``results`` (the newest N, at most 8000, default 100), ``days`` and
``minutes`` (how far back from now), ``start`` and ``end`` (``YYYY-MM-DD HH:NN:SS`` or
ISO 8601, UTC unless an offset is given), and ``status`` / ``location`` to add those
columns.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from xml.etree import ElementTree

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse

from imprint.api.identity import RuntimeDep
from imprint.api.params import MAX_ROW_ID
from imprint.api.routes.thingspeak import header_key, timestamp
from imprint.channels.chart import line_chart
from imprint.channels.entries import MAX_RESULTS, ChannelKeyInvalid, Entry, UnknownChannelField
from imprint.errors import InvalidValue
from imprint.provisioning.channels import FIELD_NAMES, Channel, KeyKind, find_by_key
from imprint.runtime import Runtime

router = APIRouter(tags=["channels"])

ChannelId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
FieldNumber = Annotated[int, Path(ge=1, le=8)]
ApiKey = Annotated[str | None, Query(max_length=64)]
Results = Annotated[int, Query(ge=1, le=MAX_RESULTS)]
Since = Annotated[int | None, Query(ge=1, le=366 * 24 * 60)]
Bound = Annotated[str | None, Query(max_length=40, description="YYYY-MM-DD HH:NN:SS, UTC")]
FeedFormat = Literal["json", "csv", "xml"]
LastFormat = Literal["json", "xml", "txt"]

_CSV = "text/csv; charset=utf-8"
_XML = "application/xml"
_NO_STORE = {"Cache-Control": "no-store"}
# The chart page has its read key in its URL; it loads nothing and runs no script.
_CHART_HEADERS = {
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
}


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


def _field_name(channel: Channel, number: int) -> str:
    name = f"field{number}"
    if name not in channel.fields:
        raise UnknownChannelField(f"channel {channel.id} has no {name}")
    return name


def _moment(text: str | None, name: str) -> datetime | None:
    if text is None or not text.strip():
        return None
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidValue(f"{name}: YYYY-MM-DD HH:NN:SS (UTC) or ISO 8601") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _entries(
    runtime: Runtime,
    channel: Channel,
    *,
    results: int,
    days: int | None = None,
    minutes: int | None = None,
    start: str | None = None,
    end: str | None = None,
) -> Sequence[Entry]:
    """The entries a feed read asks for, oldest first."""
    since = _moment(start, "start")
    until = _moment(end, "end")
    if days is not None or minutes is not None:
        back = timedelta(days=days or 0, minutes=minutes or 0)
        earliest = runtime.clock.now() - back
        since = earliest if since is None else max(since, earliest)
    if since is not None and until is not None and since > until:
        raise InvalidValue("start: must not be after end")
    return runtime.channel_entries.latest(channel.id, results, start=since, end=until)


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
    entry: Entry, names: Sequence[str], *, status: bool = False, location: bool = False
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


def _xml_text(
    parent: ElementTree.Element, tag: str, value: object, kind: str | None = None
) -> None:
    child = ElementTree.SubElement(parent, tag)
    if kind is not None:
        child.set("type", kind)
    if value is None:
        child.set("nil", "true")
    else:
        child.text = str(value)


def _xml_item(parent: ElementTree.Element, tag: str, item: dict[str, Any]) -> None:
    """A JSON object as ThingSpeak writes it in XML: dashes for underscores, typed ids."""
    node = ElementTree.SubElement(parent, tag)
    for name, value in item.items():
        kind = {"id": "integer", "entry_id": "integer", "last_entry_id": "integer"}.get(name)
        if name in ("created_at", "updated_at"):
            kind = "dateTime"
        _xml_text(node, name.replace("_", "-"), value, kind)


def _xml(root: ElementTree.Element) -> Response:
    body = ElementTree.tostring(root, encoding="unicode")
    return Response('<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n", media_type=_XML)


def _csv_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _feed_answer(
    fmt: FeedFormat,
    runtime: Runtime,
    channel: Channel,
    entries: Sequence[Entry],
    names: Sequence[str],
    *,
    status: bool,
    location: bool,
) -> Response:
    items = [feed_json(e, names, status=status, location=location) for e in entries]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        columns = ["created_at", "entry_id", *names]
        if location:
            columns += ["latitude", "longitude", "elevation"]
        if status:
            columns.append("status")
        writer.writerow(columns)
        for entry, item in zip(entries, items, strict=True):
            item["created_at"] = _csv_time(entry.created_at)
            writer.writerow(["" if item[c] is None else item[c] for c in columns])
        return Response(out.getvalue(), media_type=_CSV)
    head = channel_json(channel, runtime.channel_entries.last_entry_id(channel.id))
    if fmt == "xml":
        root = ElementTree.Element("channel")
        for name, value in head.items():
            kind = "integer" if name in ("id", "last_entry_id") else None
            if name in ("created_at", "updated_at"):
                kind = "dateTime"
            _xml_text(root, name.replace("_", "-"), value, kind)
        feeds = ElementTree.SubElement(root, "feeds")
        feeds.set("type", "array")
        for item in items:
            _xml_item(feeds, "feed", item)
        return _xml(root)
    return JSONResponse({"channel": head, "feeds": items})


def _last_answer(fmt: LastFormat, item: dict[str, Any] | None, text: str | None) -> Response:
    if fmt == "txt":
        return PlainTextResponse("-1" if item is None else (text or ""))
    if item is None:
        return JSONResponse(-1) if fmt == "json" else _xml(ElementTree.Element("nil"))
    if fmt == "xml":
        root = ElementTree.Element("feed")
        for name, value in item.items():
            kind = "integer" if name == "entry_id" else None
            _xml_text(root, name.replace("_", "-"), value, kind)
        return _xml(root)
    return JSONResponse(item)


# --- the channel ------------------------------------------------------------------------


@router.get("/channels/{channel_id}.{fmt}", summary="A channel (ThingSpeak's view)")
def view_channel(
    channel_id: ChannelId,
    fmt: Literal["json", "xml"],
    request: Request,
    runtime: RuntimeDep,
    api_key: ApiKey = None,
) -> Response:
    channel = readable_channel(runtime, request, channel_id, api_key)
    head = channel_json(channel, runtime.channel_entries.last_entry_id(channel.id))
    if fmt == "xml":
        root = ElementTree.Element("channel")
        for name, value in head.items():
            _xml_text(root, name.replace("_", "-"), value)
        return _xml(root)
    return JSONResponse(head)


# --- feeds --------------------------------------------------------------------------------


def _feeds(
    fmt: FeedFormat,
    channel_id: int,
    request: Request,
    runtime: Runtime,
    *,
    api_key: str | None,
    results: int,
    days: int | None,
    minutes: int | None,
    start: str | None,
    end: str | None,
    status: bool,
    location: bool,
) -> Response:
    channel = readable_channel(runtime, request, channel_id, api_key)
    found = _entries(
        runtime, channel, results=results, days=days, minutes=minutes, start=start, end=end
    )
    names = sorted(channel.fields)
    return _feed_answer(fmt, runtime, channel, found, names, status=status, location=location)


@router.get("/channels/{channel_id}/feeds.{fmt}", summary="A channel's entries")
def feeds(
    channel_id: ChannelId,
    fmt: FeedFormat,
    request: Request,
    runtime: RuntimeDep,
    api_key: ApiKey = None,
    results: Results = 100,
    days: Since = None,
    minutes: Since = None,
    start: Bound = None,
    end: Bound = None,
    status: bool = False,
    location: bool = False,
) -> Response:
    return _feeds(
        fmt, channel_id, request, runtime, api_key=api_key, results=results, days=days,
        minutes=minutes, start=start, end=end, status=status, location=location,
    )  # fmt: skip


@router.get("/channels/{channel_id}/feeds", summary="A channel's entries as CSV")
def feeds_csv(
    channel_id: ChannelId,
    request: Request,
    runtime: RuntimeDep,
    api_key: ApiKey = None,
    results: Results = 100,
    days: Since = None,
    minutes: Since = None,
    start: Bound = None,
    end: Bound = None,
    status: bool = False,
    location: bool = False,
) -> Response:
    return _feeds(
        "csv", channel_id, request, runtime, api_key=api_key, results=results, days=days,
        minutes=minutes, start=start, end=end, status=status, location=location,
    )  # fmt: skip


@router.get("/channels/{channel_id}/feeds/last.{fmt}", summary="The newest entry (-1: none)")
def last_entry(
    channel_id: ChannelId,
    fmt: LastFormat,
    request: Request,
    runtime: RuntimeDep,
    api_key: ApiKey = None,
    status: bool = False,
    location: bool = False,
) -> Response:
    channel = readable_channel(runtime, request, channel_id, api_key)
    found = runtime.channel_entries.latest(channel.id, 1)
    names = sorted(channel.fields)
    item = feed_json(found[0], names, status=status, location=location) if found else None
    text = None if item is None else ",".join(str(item[n] or "") for n in names)
    return _last_answer(fmt, item, text)


def _age(runtime: Runtime, channel: Channel, name: str | None) -> JSONResponse:
    """``{"last_data_age": "<seconds>", "last_data_age_units": "s"}``; -1 with no data."""
    found = runtime.channel_entries.latest(channel.id, 1 if name is None else MAX_RESULTS)
    if name is not None:
        found = [e for e in found if e.fields.get(name) is not None]
    if not found:
        return JSONResponse(-1, headers=_NO_STORE)
    seconds = max(0, int((runtime.clock.now() - found[-1].created_at).total_seconds()))
    body = {"last_data_age": str(seconds), "last_data_age_units": "s"}
    return JSONResponse(body, headers=_NO_STORE)


@router.get(
    "/channels/{channel_id}/feeds/last_data_age.json",
    summary="Seconds since the channel's newest entry",
)
def last_data_age(
    channel_id: ChannelId, request: Request, runtime: RuntimeDep, api_key: ApiKey = None
) -> JSONResponse:
    channel = readable_channel(runtime, request, channel_id, api_key)
    return _age(runtime, channel, None)


@router.get("/channels/{channel_id}/status.json", summary="A channel's status updates")
def status_updates(
    channel_id: ChannelId,
    request: Request,
    runtime: RuntimeDep,
    api_key: ApiKey = None,
    results: Results = 100,
    days: Since = None,
    minutes: Since = None,
    start: Bound = None,
    end: Bound = None,
) -> JSONResponse:
    channel = readable_channel(runtime, request, channel_id, api_key)
    found = _entries(
        runtime, channel, results=results, days=days, minutes=minutes, start=start, end=end
    )
    body = {
        "channel": {"id": channel.id, "name": channel.name},
        "feeds": [
            {"created_at": timestamp(e.created_at), "entry_id": e.entry_id, "status": e.status}
            for e in found
            if e.status is not None
        ],
    }
    return JSONResponse(body)


# --- one field ------------------------------------------------------------------------------


def _field_feed(
    fmt: FeedFormat,
    channel_id: int,
    number: int,
    request: Request,
    runtime: Runtime,
    *,
    api_key: str | None,
    results: int,
    days: int | None,
    minutes: int | None,
    start: str | None,
    end: str | None,
    status: bool,
    location: bool,
) -> Response:
    channel = readable_channel(runtime, request, channel_id, api_key)
    name = _field_name(channel, number)
    found = _entries(
        runtime, channel, results=results, days=days, minutes=minutes, start=start, end=end
    )
    return _feed_answer(fmt, runtime, channel, found, [name], status=status, location=location)


@router.get("/channels/{channel_id}/fields/{number}.{fmt}", summary="One field's entries")
def field_feed(
    channel_id: ChannelId,
    number: FieldNumber,
    fmt: FeedFormat,
    request: Request,
    runtime: RuntimeDep,
    api_key: ApiKey = None,
    results: Results = 100,
    days: Since = None,
    minutes: Since = None,
    start: Bound = None,
    end: Bound = None,
    status: bool = False,
    location: bool = False,
) -> Response:
    return _field_feed(
        fmt, channel_id, number, request, runtime, api_key=api_key, results=results, days=days,
        minutes=minutes, start=start, end=end, status=status, location=location,
    )  # fmt: skip


@router.get("/channels/{channel_id}/fields/{number}", summary="One field's entries as CSV")
def field_feed_csv(
    channel_id: ChannelId,
    number: FieldNumber,
    request: Request,
    runtime: RuntimeDep,
    api_key: ApiKey = None,
    results: Results = 100,
    days: Since = None,
    minutes: Since = None,
    start: Bound = None,
    end: Bound = None,
    status: bool = False,
    location: bool = False,
) -> Response:
    return _field_feed(
        "csv", channel_id, number, request, runtime, api_key=api_key, results=results,
        days=days, minutes=minutes, start=start, end=end, status=status, location=location,
    )  # fmt: skip


def _field_last(
    fmt: LastFormat,
    channel_id: int,
    number: int,
    request: Request,
    runtime: Runtime,
    key: str | None,
) -> Response:
    channel = readable_channel(runtime, request, channel_id, key)
    name = _field_name(channel, number)
    found = runtime.channel_entries.latest(channel.id, 1)
    item = feed_json(found[0], [name]) if found else None
    return _last_answer(fmt, item, None if item is None else item[name])


@router.get(
    "/channels/{channel_id}/fields/{number}/last.{fmt}",
    summary="One field's newest value (-1: none)",
)
def field_last(
    channel_id: ChannelId,
    number: FieldNumber,
    fmt: LastFormat,
    request: Request,
    runtime: RuntimeDep,
    api_key: ApiKey = None,
) -> Response:
    return _field_last(fmt, channel_id, number, request, runtime, api_key)


@router.get(
    "/channels/{channel_id}/fields/{number}/last",
    summary="One field's newest value as text (-1: none)",
)
def field_last_text(
    channel_id: ChannelId,
    number: FieldNumber,
    request: Request,
    runtime: RuntimeDep,
    api_key: ApiKey = None,
) -> Response:
    return _field_last("txt", channel_id, number, request, runtime, api_key)


@router.get(
    "/channels/{channel_id}/fields/{number}/last_data_age.json",
    summary="Seconds since the field's newest value",
)
def field_last_data_age(
    channel_id: ChannelId,
    number: FieldNumber,
    request: Request,
    runtime: RuntimeDep,
    api_key: ApiKey = None,
) -> JSONResponse:
    channel = readable_channel(runtime, request, channel_id, api_key)
    name = _field_name(channel, number)
    return _age(runtime, channel, name)


# --- charts ---------------------------------------------------------------------------------


@router.get(
    "/channels/{channel_id}/charts/{number}",
    summary="A chart of one field: HTML with a server-drawn SVG, times in UTC",
    response_class=HTMLResponse,
)
def chart(
    channel_id: ChannelId,
    number: FieldNumber,
    request: Request,
    runtime: RuntimeDep,
    api_key: ApiKey = None,
    results: Annotated[int, Query(ge=1, le=MAX_RESULTS)] = 60,
    days: Since = None,
    minutes: Since = None,
    start: Bound = None,
    end: Bound = None,
    title: Annotated[str | None, Query(max_length=100)] = None,
) -> HTMLResponse:
    channel = readable_channel(runtime, request, channel_id, api_key)
    name = _field_name(channel, number)
    found = _entries(
        runtime, channel, results=results, days=days, minutes=minutes, start=start, end=end
    )
    points = [(e.created_at, e.fields[name]) for e in found if e.fields.get(name) is not None]
    heading = title or f"{channel.name}: {channel.fields[name]}"
    page = line_chart(heading, channel.fields[name], points)
    return HTMLResponse(page, headers={**_NO_STORE, **_CHART_HEADERS})
