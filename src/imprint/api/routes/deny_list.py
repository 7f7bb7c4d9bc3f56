"""Admin API: the certificate deny-list, and manufacturer CRLs uploaded for x509 attestation.

Both apply to every enrollment of the instance, so they belong to no organization: only
the whole instance (an API key) reaches them; an access token gets 403
``instance_admin_required``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from cryptography import x509
from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from imprint.api.identity import InstanceAdmin, RuntimeDep
from imprint.app.auditing import audit
from imprint.attestation.revocation import (
    DeniedCertificate,
    ManufacturerCrl,
    certificate_fingerprint,
    import_crl,
    normalize_fingerprint,
)
from imprint.attestation.x509 import MAX_ENROLLMENTS, manufacturer_certificates
from imprint.errors import InvalidValue, NotFound
from imprint.provisioning.enrollments import Mechanism
from imprint.store.deny_list import SqlDenyList, SqlManufacturerCrlStore

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
    return normalize_fingerprint(body.fingerprint_sha256)


@router.post(
    "/api/v1/denied-certificates",
    status_code=201,
    summary="Refuse a certificate in every attestation, however well it chains",
)
def deny(body: DenyIn, runtime: RuntimeDep, admin: InstanceAdmin) -> DeniedOut:
    entry = DeniedCertificate(
        fingerprint_sha256=_fingerprint_of(body),
        reason=body.reason,
        created_at=datetime.now(UTC).replace(microsecond=0),
    )
    SqlDenyList(runtime.engine).add(entry)
    audit(runtime, admin, "deny_list.add", "certificate", entry.fingerprint_sha256)
    return DeniedOut.of(entry)


@router.get("/api/v1/denied-certificates", summary="List the deny-list")
def list_denied(
    runtime: RuntimeDep,
    _admin: InstanceAdmin,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> DeniedPage:
    found = SqlDenyList(runtime.engine).search(limit=limit, after=after)
    return DeniedPage(items=[DeniedOut.of(e) for e in found])


@router.get("/api/v1/denied-certificates/{fingerprint}", summary="One deny-list entry")
def show_denied(fingerprint: str, runtime: RuntimeDep, _admin: InstanceAdmin) -> DeniedOut:
    entry = SqlDenyList(runtime.engine).first_of([normalize_fingerprint(fingerprint)])
    if entry is None:
        raise NotFound("this certificate is not on the deny-list")
    return DeniedOut.of(entry)


@router.delete(
    "/api/v1/denied-certificates/{fingerprint}",
    status_code=204,
    summary="Accept the certificate again",
)
def undeny(fingerprint: str, runtime: RuntimeDep, admin: InstanceAdmin) -> Response:
    SqlDenyList(runtime.engine).remove(normalize_fingerprint(fingerprint))
    audit(runtime, admin, "deny_list.remove", "certificate", normalize_fingerprint(fingerprint))
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
    now = datetime.now(UTC).replace(microsecond=0)
    enrollments = runtime.enrollments.search(mechanism=Mechanism.X509, limit=MAX_ENROLLMENTS)
    stored = import_crl(
        SqlManufacturerCrlStore(runtime.engine),
        body.crl.encode("ascii", errors="replace"),
        manufacturer_certificates(enrollments),
        at=now,
    )
    audit(runtime, admin, "manufacturer_crl.upload", "crl", stored.issuer_key_sha256)
    return CrlOut.of(stored, now)


@router.get("/api/v1/manufacturer-crls", summary="List uploaded manufacturer CRLs")
def list_crls(
    runtime: RuntimeDep,
    _admin: InstanceAdmin,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> CrlPage:
    now = datetime.now(UTC)
    found = SqlManufacturerCrlStore(runtime.engine).search(limit=limit)
    return CrlPage(items=[CrlOut.of(c, now) for c in found])


@router.get(
    "/api/v1/manufacturer-crls/{issuer_key_sha256}", summary="One uploaded manufacturer CRL"
)
def show_crl(issuer_key_sha256: str, runtime: RuntimeDep, _admin: InstanceAdmin) -> CrlOut:
    found = SqlManufacturerCrlStore(runtime.engine).get(normalize_fingerprint(issuer_key_sha256))
    if found is None:
        raise NotFound("no manufacturer CRL for this issuer key")
    return CrlOut.of(found, datetime.now(UTC))


@router.delete(
    "/api/v1/manufacturer-crls/{issuer_key_sha256}",
    status_code=204,
    summary="Forget a manufacturer CRL (its CA is no longer checked)",
)
def delete_crl(issuer_key_sha256: str, runtime: RuntimeDep, admin: InstanceAdmin) -> Response:
    issuer = normalize_fingerprint(issuer_key_sha256)
    SqlManufacturerCrlStore(runtime.engine).remove(issuer)
    audit(runtime, admin, "manufacturer_crl.remove", "crl", issuer)
    return Response(status_code=204)
