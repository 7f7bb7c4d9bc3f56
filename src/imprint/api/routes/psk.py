"""PSKs of client applications (PSK mode): issue or register, list, revoke.

The key appears once, in the answer that issues it; it is sealed at rest and no other
answer carries it. Revoking deletes the PSK (the audit log keeps that it existed).
"""

from __future__ import annotations

import base64
from datetime import datetime

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from imprint.api.identity import PrincipalDep, RuntimeDep
from imprint.identities.psk import ClientPsk, PskOrigin

router = APIRouter(prefix="/api/v1/psk", tags=["client identities"])


class PskIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    org_id: str | None = Field(
        default=None, max_length=100, description="Default: the owner claim of your token"
    )
    subject: str | None = Field(
        default=None, max_length=100, description="The client's PSK identity; default a new UUID"
    )
    key: str | None = Field(
        default=None,
        max_length=64,
        description="Register this 16-byte key instead of getting one: 32 hex digits, base64, "
        'or plgd\'s 16-character string ("0123456789012345")',
    )


class PskOut(BaseModel):
    id: str
    org_id: str
    subject: str
    origin: PskOrigin
    created_by: str
    created_at: datetime

    @classmethod
    def of(cls, psk: ClientPsk) -> PskOut:
        return cls(
            id=psk.id,
            org_id=psk.org_id,
            subject=psk.subject,
            origin=psk.origin,
            created_by=psk.created_by,
            created_at=psk.created_at,
        )


class IssuedPsk(PskOut):
    key: str | None = Field(description="Hex; shown once, only when imprint generated it")
    key_base64: str | None = Field(description="The same key in base64")


class PskPage(BaseModel):
    items: list[PskOut]


@router.post("", status_code=201, summary="Issue a PSK, or register the client's own")
def create(
    body: PskIn, runtime: RuntimeDep, principal: PrincipalDep, response: Response
) -> IssuedPsk:
    response.headers["Cache-Control"] = "no-store"
    psk = runtime.app.identities.issue_psk(
        principal, org_id=body.org_id, subject=body.subject, key=body.key
    )
    shown = psk.origin is PskOrigin.ISSUED
    return IssuedPsk(
        **PskOut.of(psk).model_dump(),
        key=psk.key.hex() if shown else None,
        key_base64=base64.b64encode(psk.key).decode("ascii") if shown else None,
    )


@router.get("", summary="The PSKs of the organizations you see (never their keys)")
def list_psks(runtime: RuntimeDep, principal: PrincipalDep) -> PskPage:
    return PskPage(items=[PskOut.of(p) for p in runtime.app.identities.list_psks(principal)])


@router.get("/{psk_id}", summary="One PSK (never its key)")
def show(psk_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> PskOut:
    return PskOut.of(runtime.app.identities.show_psk(principal, psk_id))


@router.delete("/{psk_id}", status_code=204, summary="Revoke a PSK")
def revoke(psk_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> Response:
    runtime.app.identities.revoke_psk(principal, psk_id)
    return Response(status_code=204)
