"""Admin API for channels: list, show (with keys), regenerate and add keys.

Channels belong to their device's owner organization. A caller sees the channels of
the organizations it is a member of and their sub-organizations; any other channel
is 404. Read keys are shown to every such member (viewer and up); the write key, which
lets one write as the device, only to operators and admins.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field

from imprint.api.identity import PrincipalDep, RuntimeDep
from imprint.api.params import MAX_ROW_ID
from imprint.app.channels import ChannelView
from imprint.provisioning.channels import Channel, ChannelKey, KeyKind

router = APIRouter(prefix="/api/v1/channels", tags=["channels"])

ChannelId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]


class ChannelOut(BaseModel):
    id: int
    name: str
    owner: str
    device_id: str
    device_ref: str
    enrollment_id: str
    fields: dict[str, str] = Field(description="field1 .. field8 -> label, those in use")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, channel: Channel) -> ChannelOut:
        return cls(
            id=channel.id,
            name=channel.name,
            owner=channel.owner,
            device_id=channel.device_id,
            device_ref=channel.device_ref,
            enrollment_id=channel.enrollment_id,
            fields=dict(channel.fields),
            created_at=channel.created_at,
            updated_at=channel.updated_at,
        )


class KeyOut(BaseModel):
    id: str
    key: str
    created_at: datetime

    @classmethod
    def of(cls, key: ChannelKey) -> KeyOut:
        return cls(id=key.id, key=key.key, created_at=key.created_at)


class ChannelDetail(ChannelOut):
    last_entry_id: int
    read_keys: list[KeyOut]
    write_key: KeyOut | None = Field(description="null unless you are an operator or admin")


class ChannelPage(BaseModel):
    items: list[ChannelOut]
    next: int | None


def _detail(view: ChannelView) -> ChannelDetail:
    channel = view.channel
    return ChannelDetail(
        **ChannelOut.of(channel).model_dump(),
        last_entry_id=view.last_entry_id,
        read_keys=[KeyOut.of(k) for k in channel.read_keys],
        write_key=KeyOut.of(channel.write_key) if view.shows_write_key else None,
    )


@router.get("", summary="The channels of the organizations you see")
def list_channels(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[int | None, Query(ge=0, le=MAX_ROW_ID)] = None,
) -> ChannelPage:
    found = runtime.app.channels.search(principal, limit=limit + 1, after=after)
    page = list(found[:limit])
    return ChannelPage(
        items=[ChannelOut.of(c) for c in page], next=page[-1].id if len(found) > limit else None
    )


@router.get("/{channel_id}", summary="One channel with its keys")
def show_channel(
    channel_id: ChannelId, runtime: RuntimeDep, principal: PrincipalDep, response: Response
) -> ChannelDetail:
    view = runtime.app.channels.show(principal, channel_id)
    response.headers["Cache-Control"] = "no-store"
    return _detail(view)


@router.post(
    "/{channel_id}/keys/{kind}/regenerate",
    summary="Replace the write key, or a read key (the oldest unless key_id names one)",
)
def regenerate(
    channel_id: ChannelId,
    kind: KeyKind,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    response: Response,
    key_id: Annotated[str | None, Query(max_length=36)] = None,
) -> ChannelDetail:
    view = runtime.app.channels.regenerate_key(principal, channel_id, kind, key_id)
    response.headers["Cache-Control"] = "no-store"
    return _detail(view)


@router.post("/{channel_id}/keys/read", status_code=201, summary="Add a read key")
def add_read(
    channel_id: ChannelId, runtime: RuntimeDep, principal: PrincipalDep, response: Response
) -> ChannelDetail:
    view = runtime.app.channels.add_read_key(principal, channel_id)
    response.headers["Cache-Control"] = "no-store"
    return _detail(view)
