"""What the server knows about the caller: handy when setting up mTLS or a proxy."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from imprint.api.identity import OptionalApiKey, OptionalClientCertificate, OptionalPrincipal

router = APIRouter(prefix="/api/v1", tags=["identity"])


class CertificateIdentity(BaseModel):
    subject: str
    issuer: str
    serial: str
    fingerprint_sha256: str
    source: str


class WhoAmI(BaseModel):
    client_certificate: CertificateIdentity | None
    api_key: str | None
    kind: str | None = Field(
        default=None, description="How the bearer authenticated: api-key, user, client, external"
    )
    name: str | None = Field(default=None, description="Who the audit log names (user name, ...)")


@router.get("/whoami", summary="The client certificate and API key this request presented")
def whoami(
    certificate: OptionalClientCertificate, key: OptionalApiKey, principal: OptionalPrincipal
) -> WhoAmI:
    identity = None
    if certificate is not None:
        identity = CertificateIdentity(
            subject=certificate.certificate.subject.rfc4514_string(),
            issuer=certificate.certificate.issuer.rfc4514_string(),
            serial=format(certificate.certificate.serial_number, "x"),
            fingerprint_sha256=certificate.fingerprint_sha256,
            source=certificate.source,
        )
    return WhoAmI(
        client_certificate=identity,
        api_key=key.name if key else None,
        kind=principal.kind if principal else None,
        name=principal.name if principal else None,
    )
