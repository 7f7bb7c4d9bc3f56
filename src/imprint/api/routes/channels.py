"""Admin API for channels: list, show (with keys), regenerate and add keys.

Channels belong to their device's owner organization. A caller sees the channels of
the organizations it is a member of and their sub-organizations; any other channel
is 404. Read keys are shown to every such member (viewer and up); the write key, which
lets one write as the device, only to operators and admins.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field

from imprint.api.identity import PrincipalDep, RuntimeDep
from imprint.app.auditing import audit
from imprint.provisioning.channels import (
    Channel,
    ChannelKey,
    KeyKind,
    add_read_key,
    regenerate_read_key,
    regenerate_write_key,
)
from imprint.runtime import Runtime
from imprint.tenancy.access import Principal, authorize, org_scope
from imprint.tenancy.roles import Role

router = APIRouter(prefix="/api/v1/channels", tags=["channels"])

ChannelId = Annotated[int, Path(ge=1, le=2**31 - 1)]


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


def _visible(
    runtime: Runtime, principal: Principal, channel_id: int, needed: Role
) -> tuple[Channel, Role]:
    """The channel and the caller's role on it (404 alike for missing and foreign)."""
    channel = runtime.channels.get(channel_id)
    what = f"channel {channel_id}"
    return channel, authorize(principal, channel.owner, needed, runtime.org_tree(), what=what)


def _detail(runtime: Runtime, channel: Channel, role: Role) -> ChannelDetail:
    return ChannelDetail(
        **ChannelOut.of(channel).model_dump(),
        last_entry_id=runtime.channel_entries.last_entry_id(channel.id),
        read_keys=[KeyOut.of(k) for k in channel.read_keys],
        write_key=KeyOut.of(channel.write_key) if role.allows(Role.OPERATOR) else None,
    )


@router.get("", summary="The channels of the organizations you see")
def list_channels(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[int | None, Query(ge=0)] = None,
) -> ChannelPage:
    scope = org_scope(principal, runtime.org_tree())
    found = runtime.channels.search(owners=scope, limit=limit + 1, after=after)
    page = list(found[:limit])
    return ChannelPage(
        items=[ChannelOut.of(c) for c in page], next=page[-1].id if len(found) > limit else None
    )


@router.get("/{channel_id}", summary="One channel with its keys")
def show_channel(
    channel_id: ChannelId, runtime: RuntimeDep, principal: PrincipalDep, response: Response
) -> ChannelDetail:
    channel, role = _visible(runtime, principal, channel_id, Role.VIEWER)
    response.headers["Cache-Control"] = "no-store"
    return _detail(runtime, channel, role)


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
    _, role = _visible(runtime, principal, channel_id, Role.OPERATOR)
    at = datetime.now(UTC)
    if kind is KeyKind.WRITE:
        channel = regenerate_write_key(runtime.channels, channel_id, at=at)
    else:
        channel = regenerate_read_key(runtime.channels, channel_id, at=at, key_id=key_id)
    audit(
        runtime,
        principal,
        "channel.key_regenerate",
        "channel",
        str(channel_id),
        org_id=channel.owner,
        kind=kind.value,
    )
    response.headers["Cache-Control"] = "no-store"
    return _detail(runtime, channel, role)


@router.post("/{channel_id}/keys/read", status_code=201, summary="Add a read key")
def add_read(
    channel_id: ChannelId, runtime: RuntimeDep, principal: PrincipalDep, response: Response
) -> ChannelDetail:
    _, role = _visible(runtime, principal, channel_id, Role.OPERATOR)
    channel = add_read_key(runtime.channels, channel_id, at=datetime.now(UTC))
    audit(runtime, principal, "channel.key_add", "channel", str(channel_id), org_id=channel.owner)
    response.headers["Cache-Control"] = "no-store"
    return _detail(runtime, channel, role)
