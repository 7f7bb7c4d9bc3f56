"""Admin API: take over configuration written for other systems (a plgd hub/DPS Helm
values file). Instance-wide (it creates OAuth clients and enrollments of any
organization): API keys only, as ``imprint import plgd-values`` on the server."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from imprint.api.identity import InstanceAdmin, RuntimeDep
from imprint.app.imports import Imported
from imprint.compat.plgd import read_values

router = APIRouter(prefix="/api/v1/imports", tags=["imports"])


class PlgdValuesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    values: str = Field(max_length=2_000_000, description="The values file, YAML text")
    source: str = Field(
        default="api", max_length=500, description="Its name, for the audit entries"
    )
    dry_run: bool = Field(default=False, description="Check and show what would change")


class ImportActionOut(BaseModel):
    kind: Literal["client", "enrollment"]
    target: str
    result: Literal["created", "updated", "unchanged", "skipped"]
    detail: str


class OwnerClaimOut(BaseModel):
    file: str | None = Field(description="global.ownerClaim of the file (null: it names none)")
    server: str = Field(description="auth.owner_claim of this server")
    agree: bool = Field(description="false: hub tokens would carry the owner in another claim")


class PlgdImportOut(BaseModel):
    dry_run: bool
    owner_claim: OwnerClaimOut
    notes: list[str]
    actions: list[ImportActionOut]

    @classmethod
    def of(
        cls, file_claim: str | None, server_claim: str, imported: Imported, *, dry_run: bool
    ) -> PlgdImportOut:
        return cls(
            dry_run=dry_run,
            owner_claim=OwnerClaimOut(
                file=file_claim,
                server=server_claim,
                agree=file_claim is None or file_claim == server_claim,
            ),
            notes=list(imported.notes),
            actions=[
                ImportActionOut(kind=a.kind, target=a.target, result=a.result, detail=a.detail)
                for a in imported.actions
            ],
        )


@router.post(
    "/plgd-values",
    summary="Create or update the OAuth clients and enrollment groups of a plgd values file",
)
def plgd_values(body: PlgdValuesIn, runtime: RuntimeDep, admin: InstanceAdmin) -> PlgdImportOut:
    values = read_values(body.values)
    imported = runtime.app.imports.plgd_values(
        admin, values, source=body.source, dry_run=body.dry_run
    )
    return PlgdImportOut.of(
        values.owner_claim, runtime.settings.auth.owner_claim, imported, dry_run=body.dry_run
    )
