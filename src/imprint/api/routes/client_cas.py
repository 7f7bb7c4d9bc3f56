"""Trusted client CAs: decode before saving, then trust them for an enrollment.

Scoped by the enrollment's organization: admins add and remove trusted CAs (they
decide which devices get in), viewers list them; a foreign enrollment answers 404.
Decoding stores nothing and is open to every caller.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from imprint.api.identity import PrincipalDep, RuntimeDep
from imprint.app.auditing import audit
from imprint.app.scoping import visible_enrollment
from imprint.errors import InvalidValue
from imprint.provisioning.client_cas import (
    ClientCA,
    DecodedCertificate,
    decode,
    fingerprint,
    parse_pem_bundle,
)
from imprint.provisioning.enrollments import Mechanism
from imprint.tenancy.roles import Role

router = APIRouter(prefix="/api/v1", tags=["client CAs"])


class PemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pem: str = Field(max_length=262144, description="One or more PEM certificates")


class DecodedOut(BaseModel):
    subject: str
    issuer: str
    not_before: datetime
    not_after: datetime
    key: str
    fingerprint_sha256: str
    is_ca: bool
    self_signed: bool

    @classmethod
    def of(cls, item: DecodedCertificate) -> DecodedOut:
        return cls(
            subject=item.subject,
            issuer=item.issuer,
            not_before=item.not_before,
            not_after=item.not_after,
            key=item.key,
            fingerprint_sha256=item.fingerprint_sha256,
            is_ca=item.is_ca,
            self_signed=item.self_signed,
        )


class TrustedCA(BaseModel):
    fingerprint_sha256: str
    subject: str
    created_at: datetime
    pem: str

    @classmethod
    def of(cls, ca: ClientCA) -> TrustedCA:
        return cls(
            fingerprint_sha256=ca.fingerprint_sha256,
            subject=ca.subject,
            created_at=ca.created_at,
            pem=ca.pem,
        )


class TrustedCAList(BaseModel):
    items: list[TrustedCA]


@router.post("/client-cas/decode", summary="Show what a PEM holds, without saving anything")
def decode_pem(body: PemIn, _principal: PrincipalDep) -> list[DecodedOut]:
    return [DecodedOut.of(item) for item in decode(body.pem)]


@router.post(
    "/enrollments/{enrollment_id}/client-cas",
    status_code=201,
    summary="Trust these CAs for a client-ca enrollment",
)
def add(
    enrollment_id: str, body: PemIn, runtime: RuntimeDep, principal: PrincipalDep
) -> TrustedCAList:
    enrollment = visible_enrollment(runtime, principal, enrollment_id, Role.ADMIN)
    if enrollment.mechanism is not Mechanism.CLIENT_CA:
        raise InvalidValue(f"enrollment {enrollment_id!r} is not a client-ca enrollment")
    certificates = parse_pem_bundle(body.pem)
    decoded = decode(body.pem)
    for item in decoded:
        if not item.is_ca:
            raise InvalidValue(f"{item.subject} is not a CA certificate (basicConstraints)")
    now = datetime.now(UTC).replace(microsecond=0)
    runtime.client_cas.add(
        [
            ClientCA(
                id="",
                enrollment_id=enrollment_id,
                fingerprint_sha256=fingerprint(c),
                subject=c.subject.rfc4514_string(),
                pem=item.pem,
                created_at=now,
            )
            for c, item in zip(certificates, decoded, strict=True)
        ]
    )
    runtime.client_trust.add(certificates)
    audit(
        runtime,
        principal,
        "client_ca.add",
        "enrollment",
        enrollment_id,
        org_id=enrollment.owner,
        fingerprints=[fingerprint(c) for c in certificates],
    )
    return TrustedCAList(
        items=[TrustedCA.of(ca) for ca in runtime.client_cas.for_enrollment(enrollment_id)]
    )


@router.get("/enrollments/{enrollment_id}/client-cas", summary="The CAs an enrollment trusts")
def list_cas(enrollment_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> TrustedCAList:
    visible_enrollment(runtime, principal, enrollment_id, Role.VIEWER)
    return TrustedCAList(
        items=[TrustedCA.of(ca) for ca in runtime.client_cas.for_enrollment(enrollment_id)]
    )


@router.delete(
    "/enrollments/{enrollment_id}/client-cas/{fingerprint_sha256}",
    status_code=204,
    summary="Stop trusting a CA",
)
def remove(
    enrollment_id: str, fingerprint_sha256: str, runtime: RuntimeDep, principal: PrincipalDep
) -> Response:
    enrollment = visible_enrollment(runtime, principal, enrollment_id, Role.ADMIN)
    runtime.client_cas.remove(enrollment_id, fingerprint_sha256)
    audit(
        runtime,
        principal,
        "client_ca.remove",
        "enrollment",
        enrollment_id,
        org_id=enrollment.owner,
        fingerprint=fingerprint_sha256,
    )
    return Response(status_code=204)
