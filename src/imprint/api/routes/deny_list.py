"""Admin API: the certificate deny-list, and manufacturer CRLs uploaded for x509 attestation.

Both apply to every enrollment of the instance, so they belong to no organization: only
the whole instance (an API key) reaches them; an access token gets 403
``instance_admin_required``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from cryptography import x509
from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from imprint.api.identity import InstanceAdmin, RuntimeDep
from imprint.api.params import Sha256
from imprint.attestation.revocation import (
    DeniedCertificate,
    ManufacturerCrl,
    certificate_fingerprint,
)
from imprint.errors import InvalidValue

router = APIRouter(tags=["deny-list"])

_FINGERPRINT = Annotated[str, Field(max_length=100)]


class DenyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fingerprint_sha256: _FINGERPRINT | None = Field(
        default=None, description="SHA-256 of the certificate's DER, hex (colons allowed)"
    )
    certificate: str | None = Field(
        default=None, max_length=16384, description="Or the certificate itself, PEM"
    )
    reason: str = Field(min_length=1, max_length=200)


class DeniedOut(BaseModel):
    fingerprint_sha256: str
    reason: str
    created_at: datetime

    @classmethod
    def of(cls, entry: DeniedCertificate) -> DeniedOut:
        return cls(
            fingerprint_sha256=entry.fingerprint_sha256,
            reason=entry.reason,
            created_at=entry.created_at,
        )


class DeniedPage(BaseModel):
    items: list[DeniedOut]


def _fingerprint_of(body: DenyIn) -> str:
    if (body.fingerprint_sha256 is None) == (body.certificate is None):
        raise InvalidValue("give fingerprint_sha256 or certificate, exactly one")
    if body.certificate is not None:
        try:
            certificate = x509.load_pem_x509_certificate(body.certificate.encode())
        except ValueError:
            raise InvalidValue("certificate: not a PEM certificate") from None
        return certificate_fingerprint(certificate)
    assert body.fingerprint_sha256 is not None
    return body.fingerprint_sha256


@router.post(
    "/api/v1/denied-certificates",
    status_code=201,
    summary="Refuse a certificate in every attestation, however well it chains",
)
def deny(body: DenyIn, runtime: RuntimeDep, admin: InstanceAdmin) -> DeniedOut:
    return DeniedOut.of(runtime.app.deny_list.deny(admin, _fingerprint_of(body), body.reason))


@router.get("/api/v1/denied-certificates", summary="List the deny-list")
def list_denied(
    runtime: RuntimeDep,
    admin: InstanceAdmin,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> DeniedPage:
    found = runtime.app.deny_list.search(admin, limit=limit, after=after)
    return DeniedPage(items=[DeniedOut.of(e) for e in found])


@router.get("/api/v1/denied-certificates/{fingerprint}", summary="One deny-list entry")
def show_denied(fingerprint: Sha256, runtime: RuntimeDep, admin: InstanceAdmin) -> DeniedOut:
    return DeniedOut.of(runtime.app.deny_list.show(admin, fingerprint))


@router.delete(
    "/api/v1/denied-certificates/{fingerprint}",
    status_code=204,
    summary="Accept the certificate again",
)
def undeny(fingerprint: Sha256, runtime: RuntimeDep, admin: InstanceAdmin) -> Response:
    runtime.app.deny_list.undeny(admin, fingerprint)
    return Response(status_code=204)


class CrlIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    crl: str = Field(max_length=900_000, description="The CRL: PEM, or DER in base64")


class CrlOut(BaseModel):
    issuer_key_sha256: str = Field(description="SHA-256 of the issuing CA's public key (the id)")
    issuer: str
    crl_number: str | None = Field(description="hex")
    this_update: datetime
    next_update: datetime | None
    stale: bool = Field(description="Past nextUpdate: upload a fresh one")
    revoked_count: int
    fingerprint_sha256: str
    uploaded_at: datetime

    @classmethod
    def of(cls, crl: ManufacturerCrl, at: datetime) -> CrlOut:
        return cls(
            issuer_key_sha256=crl.issuer_key_sha256,
            issuer=crl.issuer,
            crl_number=None if crl.crl_number is None else format(crl.crl_number, "x"),
            this_update=crl.this_update,
            next_update=crl.next_update,
            stale=crl.is_stale(at),
            revoked_count=crl.revoked_count,
            fingerprint_sha256=crl.fingerprint_sha256,
            uploaded_at=crl.uploaded_at,
        )


class CrlPage(BaseModel):
    items: list[CrlOut]


@router.post(
    "/api/v1/manufacturer-crls",
    status_code=201,
    summary="Upload a manufacturer CA's CRL (replaces an older one of the same CA)",
)
def upload_crl(body: CrlIn, runtime: RuntimeDep, admin: InstanceAdmin) -> CrlOut:
    stored = runtime.app.deny_list.upload_crl(admin, body.crl.encode("ascii", errors="replace"))
    return CrlOut.of(stored, stored.uploaded_at)


@router.get("/api/v1/manufacturer-crls", summary="List uploaded manufacturer CRLs")
def list_crls(
    runtime: RuntimeDep,
    admin: InstanceAdmin,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> CrlPage:
    now = runtime.clock.now()
    found = runtime.app.deny_list.search_crls(admin, limit=limit)
    return CrlPage(items=[CrlOut.of(c, now) for c in found])


@router.get(
    "/api/v1/manufacturer-crls/{issuer_key_sha256}", summary="One uploaded manufacturer CRL"
)
def show_crl(issuer_key_sha256: Sha256, runtime: RuntimeDep, admin: InstanceAdmin) -> CrlOut:
    found = runtime.app.deny_list.show_crl(admin, issuer_key_sha256)
    return CrlOut.of(found, runtime.clock.now())


@router.delete(
    "/api/v1/manufacturer-crls/{issuer_key_sha256}",
    status_code=204,
    summary="Forget a manufacturer CRL (its CA is no longer checked)",
)
def delete_crl(issuer_key_sha256: Sha256, runtime: RuntimeDep, admin: InstanceAdmin) -> Response:
    runtime.app.deny_list.remove_crl(admin, issuer_key_sha256)
    return Response(status_code=204)
