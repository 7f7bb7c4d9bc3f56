"""Trusted client CAs: decode before saving, then trust them for an enrollment.

Scoped by the enrollment's organization: admins add and remove trusted CAs (they
decide which devices get in), viewers list them; a foreign enrollment answers 404.
Decoding stores nothing and is open to every caller.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from imprint.api.identity import PrincipalDep, RuntimeDep
from imprint.provisioning.client_cas import ClientCA, DecodedCertificate, decode

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
    trusted_as: Literal["root", "intermediate"] = Field(
        description="root: devices send their intermediates; intermediate: the path ends here"
    )
    chain: list[str] = Field(
        description="Subjects from this CA up through the PEM, as far as it links"
    )
    devices_send: str = Field(description="What a device of this CA must send")

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
            trusted_as="root" if item.trusted_as == "root" else "intermediate",
            chain=list(item.chain),
            devices_send=item.devices_send,
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
    trusted = runtime.app.client_cas.add(principal, enrollment_id, body.pem)
    return TrustedCAList(items=[TrustedCA.of(ca) for ca in trusted])


@router.get("/enrollments/{enrollment_id}/client-cas", summary="The CAs an enrollment trusts")
def list_cas(enrollment_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> TrustedCAList:
    trusted = runtime.app.client_cas.list(principal, enrollment_id)
    return TrustedCAList(items=[TrustedCA.of(ca) for ca in trusted])


@router.delete(
    "/enrollments/{enrollment_id}/client-cas/{fingerprint_sha256}",
    status_code=204,
    summary="Stop trusting a CA",
)
def remove(
    enrollment_id: str, fingerprint_sha256: str, runtime: RuntimeDep, principal: PrincipalDep
) -> Response:
    runtime.app.client_cas.remove(principal, enrollment_id, fingerprint_sha256)
    return Response(status_code=204)
