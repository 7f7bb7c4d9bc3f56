"""API keys: list, create (with an expiry), rotate and revoke (the whole instance only).

A key's token is shown once, when it is created or rotated; only its SHA-256 is stored.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from imprint.api.identity import InstanceAdmin, RuntimeDep
from imprint.auth.api_keys import ApiKey, IssuedApiKey

router = APIRouter(prefix="/api/v1/api-keys", tags=["api keys"])

_NO_STORE = {"Cache-Control": "no-store"}


class ApiKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$",
        description="Letters, digits and . _ @ -, starting with a letter or digit",
    )
    expires_in_days: int | None = Field(
        default=None, ge=1, le=3653, description="Stops working after this many days"
    )


class RotateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expires_in_days: int | None = Field(
        default=None, ge=1, le=3653, description="A new expiry from now (default: keep it)"
    )


class ApiKeyOut(BaseModel):
    name: str
    key_id: str = Field(description="The part of the token after imp_ that names the key")
    role: str
    created_at: datetime
    last_used_at: datetime | None = Field(description="Recorded at most once a minute")
    expires_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyOut:
        return cls(
            name=key.name,
            key_id=key.key_id,
            role=key.role,
            created_at=key.created_at,
            last_used_at=key.last_used_at,
            expires_at=key.expires_at,
        )


class IssuedApiKeyOut(ApiKeyOut):
    token: str = Field(description="Shown here once; send it as a bearer token")

    @classmethod
    def issued(cls, issued: IssuedApiKey) -> IssuedApiKeyOut:
        return cls(**ApiKeyOut.of(issued.key).model_dump(), token=issued.token)


class ApiKeyPage(BaseModel):
    items: list[ApiKeyOut]
    total: int
    next: str | None = None


def _days(days: int | None) -> timedelta | None:
    return None if days is None else timedelta(days=days)


@router.get("", summary="Every API key (never a secret)")
def list_keys(
    runtime: RuntimeDep,
    principal: InstanceAdmin,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(max_length=100, description="A page's 'next'")] = None,
) -> ApiKeyPage:
    found = runtime.app.api_keys.page(principal, limit=limit, after=after)
    return ApiKeyPage(
        items=[ApiKeyOut.of(k) for k in found.items], total=found.total, next=found.next
    )


@router.post("", status_code=201, summary="Create an API key; its token is shown once")
def create(
    body: ApiKeyIn, runtime: RuntimeDep, principal: InstanceAdmin, response: Response
) -> IssuedApiKeyOut:
    response.headers.update(_NO_STORE)
    issued = runtime.app.api_keys.create(
        principal, body.name, expires_in=_days(body.expires_in_days)
    )
    return IssuedApiKeyOut.issued(issued)


@router.get("/{name}", summary="One API key")
def show(name: str, runtime: RuntimeDep, principal: InstanceAdmin) -> ApiKeyOut:
    return ApiKeyOut.of(runtime.app.api_keys.show(principal, name))


@router.post("/{name}/rotate", summary="A new token for the key; the old one stops working")
def rotate(
    name: str,
    runtime: RuntimeDep,
    principal: InstanceAdmin,
    response: Response,
    body: RotateIn | None = None,
) -> IssuedApiKeyOut:
    response.headers.update(_NO_STORE)
    days = (body or RotateIn()).expires_in_days
    return IssuedApiKeyOut.issued(
        runtime.app.api_keys.rotate(principal, name, expires_in=_days(days))
    )


@router.delete("/{name}", status_code=204, summary="Revoke an API key at once")
def revoke(name: str, runtime: RuntimeDep, principal: InstanceAdmin) -> Response:
    runtime.app.api_keys.revoke(principal, name)
    return Response(status_code=204)
