"""Admin certificate API: issue from a CSR, list, show, revoke.

Scoped by organization (the one a certificate was issued for): viewers read, operators
revoke; a foreign certificate answers 404. Issuing a certificate of any name from a CSR,
and certificates issued for no organization, belong to the whole instance (API keys).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from imprint.api.device_plane import run_blocking
from imprint.api.device_route import DeviceRoute, json_response
from imprint.api.identity import DeviceInstanceAdmin, PrincipalDep, RuntimeDep, runtime_of
from imprint.api.params import Serial
from imprint.durations import parse_duration
from imprint.pki.records import CertificateRecord, CertificateStatus

router = APIRouter(prefix="/api/v1/certificates", tags=["certificates"])
#: CSR signing, served without FastAPI's request handling.
device_routes = APIRouter(
    prefix="/api/v1/certificates", tags=["certificates"], route_class=DeviceRoute
)


class IssueBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    csr: str = Field(max_length=65536, description="PEM certificate signing request")
    profile: str = Field(default="device", max_length=32)
    common_name: str | None = Field(
        default=None, max_length=64, description="Default: the CSR's common name"
    )
    sans: list[Annotated[str, Field(max_length=253)]] = Field(default_factory=list, max_length=100)
    validity_days: int | None = Field(default=None, ge=1, le=3650)


class RevokeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="unspecified", max_length=32)


class CertificateOut(BaseModel):
    serial: str
    issuer: str
    profile: str
    subject: str
    sans: list[str]
    status: str
    not_before: datetime
    not_after: datetime
    requested_by: str
    owner: str | None = Field(description="The organization it was issued for (null: instance)")
    fingerprint_sha256: str | None
    revoked_at: datetime | None
    revocation_reason: str | None
    certificate: str | None = Field(description="PEM, once issued")

    @classmethod
    def of(cls, record: CertificateRecord) -> CertificateOut:
        """``record`` as the API shows it."""
        pem = None
        if record.der is not None:
            pem = (
                x509.load_der_x509_certificate(record.der)
                .public_bytes(serialization.Encoding.PEM)
                .decode("ascii")
            )
        return cls(**cls.fields_of(record, pem))

    @staticmethod
    def fields_of(record: CertificateRecord, pem: str | None) -> dict[str, Any]:
        """The fields of ``record`` with ``pem`` as its certificate."""
        return {
            "serial": record.serial,
            "issuer": record.issuer,
            "profile": record.profile,
            "subject": record.subject,
            "sans": list(record.sans),
            "status": record.status.value,
            "not_before": record.not_before,
            "not_after": record.not_after,
            "requested_by": record.requested_by,
            "owner": record.owner,
            "fingerprint_sha256": record.fingerprint_sha256,
            "revoked_at": record.revoked_at,
            "revocation_reason": record.revocation_reason,
            "certificate": pem,
        }


class IssuedOut(CertificateOut):
    chain: str = Field(description="PEM: the certificate, then each CA up to the root")


class CertificatePage(BaseModel):
    items: list[CertificateOut]
    total: int = Field(description="How many certificates match, over all pages")
    next: str | None = Field(description="Pass as ?after= for the next page")


@device_routes.post(
    "", status_code=201, summary="Issue a certificate from a CSR", response_model=IssuedOut
)
async def issue(body: IssueBody, request: Request, principal: DeviceInstanceAdmin) -> Response:
    runtime = runtime_of(request)
    issued = await run_blocking(
        runtime,
        runtime.app.certificates.issue,
        principal,
        body.csr,
        profile=body.profile,
        common_name=body.common_name,
        sans=body.sans,
        validity_days=body.validity_days,
    )
    pem = issued.pem()
    out = IssuedOut(**CertificateOut.fields_of(issued.record, pem), chain=issued.chain_pem(pem))
    return json_response(out, 201)


@router.get("", summary="List certificates")
def list_certificates(
    runtime: RuntimeDep,
    principal: PrincipalDep,
    status: CertificateStatus | None = None,
    expiring_within: Annotated[
        str | None, Query(max_length=10, description="e.g. 30d: not after now + this")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(max_length=40)] = None,
) -> CertificatePage:
    page = runtime.app.certificates.page(
        principal,
        status=status,
        expiring_within=parse_duration(expiring_within) if expiring_within else None,
        limit=limit,
        after=after,
    )
    return CertificatePage(
        items=[CertificateOut.of(r) for r in page.items], total=page.total, next=page.next
    )


@router.get("/{serial}", summary="One certificate")
def show(serial: Serial, runtime: RuntimeDep, principal: PrincipalDep) -> CertificateOut:
    return CertificateOut.of(runtime.app.certificates.get(principal, serial))


@router.post("/{serial}/revoke", summary="Revoke a certificate; the CRL lists it at once")
def revoke(
    serial: Serial, runtime: RuntimeDep, principal: PrincipalDep, body: RevokeBody | None = None
) -> CertificateOut:
    reason = body.reason if body is not None else "unspecified"
    return CertificateOut.of(runtime.app.certificates.revoke(principal, serial, reason))
