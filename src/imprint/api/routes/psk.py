"""PSKs of client applications (PSK mode): issue or register, list, revoke.

The key appears once, in the answer that issues it; it is sealed at rest and no other
answer carries it. Revoking deletes the PSK (the audit log keeps that it existed).
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from imprint.api.identity import PrincipalDep, RuntimeDep
from imprint.app.auditing import audit
from imprint.errors import InvalidValue, NotFound
from imprint.identities.psk import ClientPsk, PskOrigin, new_psk, parse_key
from imprint.runtime import Runtime
from imprint.tenancy.access import Principal, authorize, org_scope
from imprint.tenancy.roles import Role

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
        description="Register this 16-byte key (32 hex digits or base64) instead of getting one",
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


def _visible(runtime: Runtime, principal: Principal, psk_id: str) -> ClientPsk:
    if len(psk_id) > 36:
        raise NotFound(f"no PSK {psk_id[:36]!r}")
    psk = runtime.identities.psks.get(psk_id)
    scope = org_scope(principal, runtime.org_tree())
    if scope is not None and psk.org_id not in scope:
        raise NotFound(f"no PSK {psk_id!r}")
    return psk


@router.post("", status_code=201, summary="Issue a PSK, or register the client's own")
def create(
    body: PskIn, runtime: RuntimeDep, principal: PrincipalDep, response: Response
) -> IssuedPsk:
    response.headers["Cache-Control"] = "no-store"
    org_id = body.org_id or principal.owner
    if org_id is None:
        raise InvalidValue("org_id: the organization the PSK belongs to")
    tree = runtime.org_tree()
    authorize(principal, org_id, Role.OPERATOR, tree, what=f"organization {org_id!r}")
    if body.org_id is not None and body.org_id not in tree:
        raise NotFound(f"no organization {org_id!r}")
    key = None if body.key is None else parse_key(body.key)
    psk = new_psk(
        org_id,
        subject=body.subject,
        key=key,
        created_by=principal.actor,
        at=datetime.now(UTC).replace(microsecond=0),
    )
    runtime.identities.psks.add(psk)
    audit(
        runtime,
        principal,
        "psk.create",
        "psk",
        psk.id,
        org_id=org_id,
        subject=psk.subject,
        origin=psk.origin.value,
    )
    shown = psk.origin is PskOrigin.ISSUED
    return IssuedPsk(
        **PskOut.of(psk).model_dump(),
        key=psk.key.hex() if shown else None,
        key_base64=base64.b64encode(psk.key).decode("ascii") if shown else None,
    )


@router.get("", summary="The PSKs of the organizations you see (never their keys)")
def list_psks(runtime: RuntimeDep, principal: PrincipalDep) -> PskPage:
    scope = org_scope(principal, runtime.org_tree())
    return PskPage(items=[PskOut.of(p) for p in runtime.identities.psks.search(scope, 1000)])


@router.get("/{psk_id}", summary="One PSK (never its key)")
def show(psk_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> PskOut:
    return PskOut.of(_visible(runtime, principal, psk_id))


@router.delete("/{psk_id}", status_code=204, summary="Revoke a PSK")
def revoke(psk_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> Response:
    psk = _visible(runtime, principal, psk_id)
    authorize(principal, psk.org_id, Role.OPERATOR, runtime.org_tree(), what=f"PSK {psk_id!r}")
    runtime.identities.psks.remove(psk.id)
    audit(runtime, principal, "psk.revoke", "psk", psk.id, org_id=psk.org_id, subject=psk.subject)
    return Response(status_code=204)
