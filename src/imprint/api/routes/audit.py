"""The audit log: filter and page through who did what; verify its hash chain."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from imprint.api.identity import InstanceAdmin, PrincipalDep, RuntimeDep
from imprint.api.params import MAX_ROW_ID
from imprint.audit import AuditEntry, AuditQuery, AuditRecord, BreakReason, ChainReport

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])

Text = Annotated[str | None, Query(max_length=200)]


class AuditEntryOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target_type: str
    target_id: str | None
    org_id: str | None
    outcome: str
    details: dict[str, Any]

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditEntryOut:
        assert entry.id is not None
        return cls(
            id=entry.id,
            at=entry.at,
            actor=entry.actor,
            action=entry.action,
            target_type=entry.target_type,
            target_id=entry.target_id,
            org_id=entry.org_id,
            outcome=entry.outcome,
            details=dict(entry.details),
        )


class AuditPage(BaseModel):
    items: list[AuditEntryOut]
    next_before: int | None = Field(description="Pass as ?before= for the next (older) page")


def _utc(value: datetime | None) -> datetime | None:
    """A time without an offset is taken as UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@router.get("", summary="Audit entries, newest first (admins: of their organizations)")
def search(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    action: Text = None,
    actor: Text = None,
    target_type: Text = None,
    target_id: Text = None,
    org: Text = None,
    outcome: Text = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before: Annotated[int | None, Query(ge=1, le=MAX_ROW_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditPage:
    found = runtime.app.audit.search(
        principal,
        AuditQuery(
            actor=actor,
            action=action,
            target_type=target_type,
            target_id=target_id,
            outcome=outcome,
            since=_utc(since),
            until=_utc(until),
            before_id=before,
            limit=limit,
        ),
        org=org,
    )
    items = [AuditEntryOut.of(e) for e in found]
    return AuditPage(items=items, next_before=items[-1].id if len(items) == limit else None)


class ChainBreakOut(BaseModel):
    id: int = Field(description="The first entry that does not hold")
    reason: BreakReason = Field(
        description="content_changed: the entry (or its hash) was edited; "
        "predecessor_mismatch: the entry before it was deleted or moved; "
        "hash_missing: the entry was not written by imprint"
    )


class ChainReportOut(BaseModel):
    ok: bool
    entries: int = Field(description="Entries checked, oldest first")
    head: str | None = Field(
        description="The newest entry's hash (64 zeros for an empty log) when the chain "
        "holds: keep it elsewhere, the chain alone cannot show its newest entries deleted"
    )
    broken: ChainBreakOut | None

    @classmethod
    def of(cls, report: ChainReport) -> ChainReportOut:
        broken = report.broken
        return cls(
            ok=report.ok,
            entries=report.entries,
            head=report.head,
            broken=None if broken is None else ChainBreakOut(id=broken.id, reason=broken.reason),
        )


@router.get("/verify", summary="Verify the audit log's hash chain (API keys only)")
def verify(runtime: RuntimeDep, admin: InstanceAdmin) -> ChainReportOut:
    return ChainReportOut.of(runtime.app.audit.verify(admin))


def _lines(records: Iterator[AuditRecord]) -> Iterator[str]:
    for record in records:
        yield json.dumps(asdict(record)) + "\n"


@router.get(
    "/export",
    summary="Every entry, oldest first, as JSON lines with their hashes (API keys only)",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
def export(runtime: RuntimeDep, admin: InstanceAdmin) -> StreamingResponse:
    """What ``imprint audit export`` writes: one object a line (``id``, ``at``, ``actor``,
    ``action``, ``target_type``, ``target_id``, ``org_id``, ``outcome``, ``details`` as
    stored, ``prev_hash``, ``hash``), read a page at a time as it is sent."""
    records = runtime.app.audit.export(admin)
    return StreamingResponse(
        _lines(records),
        media_type="application/x-ndjson",
        headers={"Cache-Control": "no-store"},
    )
