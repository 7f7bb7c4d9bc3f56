"""Admin API for out-of-band secrets: register one or many, list, remove.

Scoped by the enrollment's organization: operators register and remove secrets,
viewers list them (never the secret); a foreign enrollment answers 404.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from imprint.api.identity import PrincipalDep, RuntimeDep
from imprint.api.problems import problem_response
from imprint.provisioning.oob_secrets import (
    ImportReport,
    OobSecretSummary,
    RegistrationResult,
    RowsInvalid,
    parse_json,
)

router = APIRouter(prefix="/api/v1/enrollments", tags=["oob-secrets"])

MAX_BULK_ROWS = 50_000


class SecretIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_id: str = Field(max_length=200, description="The registration id the device sends")
    secret: str = Field(max_length=1024, description="8 to 256 characters; stored sealed")
    valid_until: datetime | None = Field(
        default=None, description="Default: three days from now; at most a year ahead"
    )


class SecretOut(BaseModel):
    enrollment_id: str
    device_id: str
    valid_until: datetime
    created_at: datetime
    used_at: datetime | None

    @classmethod
    def of(cls, summary: OobSecretSummary) -> SecretOut:
        return cls(
            enrollment_id=summary.enrollment_id,
            device_id=summary.device_id,
            valid_until=summary.valid_until,
            created_at=summary.created_at,
            used_at=summary.used_at,
        )


class RegisteredSecret(SecretOut):
    result: RegistrationResult


class SecretPage(BaseModel):
    items: list[SecretOut]
    total: int = Field(description="How many secrets the enrollment has, over all pages")
    next: str | None = Field(description="Pass as 'after' for the next page")


class RowProblemOut(BaseModel):
    line: int = Field(description="CSV line, or 1-based item number in a JSON list")
    field: str | None
    device_id: str | None
    message: str


class ImportOut(BaseModel):
    enrollment_id: str
    rows: int
    created: int
    updated: int
    unchanged: int
    invalid: list[RowProblemOut]
    dry_run: bool
    written: bool

    @classmethod
    def of(cls, report: ImportReport) -> ImportOut:
        return cls(
            enrollment_id=report.enrollment_id,
            rows=report.rows,
            created=report.created,
            updated=report.updated,
            unchanged=report.unchanged,
            invalid=[
                RowProblemOut(line=p.line, field=p.field, device_id=p.device_id, message=p.message)
                for p in report.problems
            ],
            dry_run=report.dry_run,
            written=report.written,
        )


@router.post(
    "/{enrollment_id}/oob-secrets",
    summary="Register a device's out-of-band secret (idempotent)",
    responses={201: {"description": "Created"}, 200: {"description": "Updated or unchanged"}},
)
def register(
    enrollment_id: str,
    body: SecretIn,
    response: Response,
    runtime: RuntimeDep,
    principal: PrincipalDep,
) -> RegisteredSecret:
    result, summary = runtime.app.oob_secrets.register(
        principal, enrollment_id, body.device_id, body.secret, body.valid_until
    )
    response.status_code = 201 if result is RegistrationResult.CREATED else 200
    return RegisteredSecret(**SecretOut.of(summary).model_dump(), result=result)


@router.post(
    "/{enrollment_id}/oob-secrets:bulk",
    summary="Register many secrets at once: all rows or none (or the valid ones)",
    response_model=ImportOut,
    responses={
        400: {"description": "Some rows are invalid; nothing was written (not skip_invalid)"}
    },
)
def register_bulk(
    enrollment_id: str,
    rows: Annotated[list[Any], Body(max_length=MAX_BULK_ROWS)],
    runtime: RuntimeDep,
    principal: PrincipalDep,
    dry_run: Annotated[bool, Query(description="Report what would change; write nothing")] = False,
    skip_invalid: Annotated[
        bool,
        Query(description="Write the valid rows; list the invalid ones in 'invalid' (200)"),
    ] = False,
) -> Response | ImportOut:
    try:
        report = runtime.app.oob_secrets.import_secrets(
            principal, enrollment_id, parse_json(rows), dry_run=dry_run, skip_invalid=skip_invalid
        )
    except RowsInvalid as exc:
        body = ImportOut.of(exc.report).model_dump(mode="json")
        return problem_response(400, exc.code, exc.message, **body)
    return ImportOut.of(report)


@router.get("/{enrollment_id}/oob-secrets", summary="List registered secrets (never the secret)")
def list_secrets(
    enrollment_id: str,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(max_length=200)] = None,
) -> SecretPage:
    page = runtime.app.oob_secrets.page(principal, enrollment_id, limit=limit, after=after)
    return SecretPage(items=[SecretOut.of(s) for s in page.items], total=page.total, next=page.next)


@router.delete(
    "/{enrollment_id}/oob-secrets/{device_id:path}",
    status_code=204,
    summary="Remove a device's secret",
)
def remove(
    enrollment_id: str, device_id: str, runtime: RuntimeDep, principal: PrincipalDep
) -> Response:
    runtime.app.oob_secrets.remove(principal, enrollment_id, device_id)
    return Response(status_code=204)


class OneTimePasswordIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_id: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[!-~]+$",
        description="The device id it admits (EST username): printable ASCII, no spaces",
    )
    valid_minutes: int = Field(
        default=1440, ge=1, le=43200, description="How long it may be used (default a day)"
    )


class OneTimePasswordOut(BaseModel):
    id: str
    enrollment_id: str
    device_id: str
    password: str = Field(description="Shown this once; only its SHA-256 is stored")
    expires_at: datetime


@router.post(
    "/{enrollment_id}/one-time-passwords",
    summary="Make a one-time password for EST's HTTP Basic (oob-secret enrollments)",
    status_code=201,
)
def create_one_time_password(
    enrollment_id: str, body: OneTimePasswordIn, runtime: RuntimeDep, principal: PrincipalDep
) -> OneTimePasswordOut:
    password, record = runtime.app.oob_secrets.create_one_time_password(
        principal, enrollment_id, body.device_id, timedelta(minutes=body.valid_minutes)
    )
    return OneTimePasswordOut(
        id=record.id,
        enrollment_id=record.enrollment_id,
        device_id=record.device_id,
        password=password,
        expires_at=record.expires_at,
    )
