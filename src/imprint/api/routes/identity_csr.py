"""Identity certificates for client applications: ``POST /api/v1/sign/identity-csr``.

The caller's token names the owner (the owner claim); the certificate's CN is that
owner, whatever the CSR asks for. Two request shapes are accepted: imprint's
``{"csr": "<PEM>"}`` and the plgd certificate authority's protojson
``{"certificateSigningRequest": "<base64 of the PEM>"}``, which is answered in kind
(``{"certificate": "<base64 of the PEM chain>"}``). A raw ``application/pkcs10`` body
(PEM or DER) works too.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

from cryptography import x509
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from imprint.api.device_plane import run_blocking
from imprint.api.identity import DevicePrincipal, RuntimeDep
from imprint.errors import InvalidCSR, InvalidValue
from imprint.identities.identity import IdentityCertificate
from imprint.pki.csr import load_csr

__all__ = ["CSR_BODY_SCHEMA", "IdentityOut", "read_csr", "router"]

router = APIRouter(prefix="/api/v1/sign", tags=["client identities"])

_MAX_BODY = 96 * 1024
_NO_STORE = {"Cache-Control": "no-store"}


class CsrIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    csr: str | None = Field(default=None, max_length=65536, description="PEM PKCS#10 request")
    certificate_signing_request: str | None = Field(
        default=None,
        alias="certificateSigningRequest",
        max_length=90_000,
        description="plgd protojson: base64 of the PEM (or DER) request",
    )


class IdentityOut(BaseModel):
    owner: str = Field(description="The owner (organization id): the certificate's CN")
    serial: str
    certificate: str = Field(description="PEM")
    certificate_chain: str = Field(description="PEM: the certificate, then the issuing CA(s)")
    trust_anchors: list[str] = Field(description="PEM root certificate(s) of the domain")
    not_before: datetime
    not_after: datetime
    reused: bool = Field(description="True: the owner's current certificate for this key")

    @classmethod
    def of(cls, identity: IdentityCertificate) -> IdentityOut:
        certificate = identity.certificate
        return cls(
            owner=identity.owner,
            serial=identity.serial,
            certificate=identity.certificate_pem(),
            certificate_chain=identity.chain_pem(),
            trust_anchors=identity.trust_anchors_pem(),
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            reused=identity.reused,
        )


CSR_BODY_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": CsrIn.model_json_schema(by_alias=True)},
            "application/pkcs10": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


async def read_csr(request: Request) -> tuple[x509.CertificateSigningRequest, bool]:
    """The CSR of a request body, and whether it came in the plgd protojson shape.

    Raises:
        InvalidCSR, CSRSignatureInvalid, UnsupportedKey: not a usable CSR.
        RequestValidationError: a JSON body of the wrong shape.
    """
    body = await request.body()
    if len(body) > _MAX_BODY:
        raise InvalidCSR("the request body is larger than 96 KiB")
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "application/pkcs10":
        return load_csr(body), False
    if media not in ("application/json", ""):
        raise InvalidValue('send application/json ({"csr": PEM}) or application/pkcs10')
    try:
        parsed = CsrIn.model_validate_json(body or b"null")
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_input=False)]
        ) from None
    if (parsed.csr is None) == (parsed.certificate_signing_request is None):
        raise InvalidValue("give exactly one of csr and certificateSigningRequest")
    if parsed.csr is not None:
        return load_csr(parsed.csr), False
    assert parsed.certificate_signing_request is not None
    try:
        raw = base64.b64decode(parsed.certificate_signing_request, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidCSR("certificateSigningRequest: not base64") from None
    return load_csr(raw), True


@router.post(
    "/identity-csr",
    summary="Sign the caller's owner identity certificate (client profile, CN = owner)",
    response_model=IdentityOut,
    openapi_extra=CSR_BODY_SCHEMA,
)
async def sign_identity(
    request: Request, runtime: RuntimeDep, principal: DevicePrincipal
) -> JSONResponse:
    csr, plgd = await read_csr(request)
    identity = await run_blocking(runtime, runtime.app.identities.sign_identity, principal, csr)
    if plgd:
        chain = identity.chain_pem().encode("ascii")
        return JSONResponse(
            {"certificate": base64.b64encode(chain).decode("ascii")}, headers=_NO_STORE
        )
    return JSONResponse(IdentityOut.of(identity).model_dump(mode="json"), headers=_NO_STORE)
