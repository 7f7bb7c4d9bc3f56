"""Public CA material: certificates and CRLs, no authentication."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from fastapi import APIRouter, Response

from imprint.api.identity import RuntimeDep
from imprint.errors import NotFound

router = APIRouter(tags=["ca"])

PEM = "application/x-pem-file"


@router.get("/ca/{name}.crt", summary="A CA certificate in DER (root or issuing)")
def ca_der(name: str, runtime: RuntimeDep) -> Response:
    material = runtime.authority.material
    certificates = {"root": material.root, "issuing": material.issuing}
    if name not in certificates:
        raise NotFound("CA certificates: root.crt and issuing.crt (DER)")
    certificate = certificates[name]
    return Response(
        certificate.public_bytes(serialization.Encoding.DER), media_type="application/pkix-cert"
    )


@router.get("/ca/{name}.pem", summary="CA certificates in PEM (root, issuing or chain)")
def ca_pem(name: str, runtime: RuntimeDep) -> Response:
    material = runtime.authority.material
    certificates = {"root": [material.root], "issuing": [material.issuing], "chain": material.chain}
    if name not in certificates:
        raise NotFound("CA certificates: root.pem, issuing.pem and chain.pem")
    body = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates[name])
    return Response(body, media_type=PEM)


@router.get(
    "/crl/{issuer}.{encoding}",
    summary="The CRL of an issuer: 'issuing', 'root' or its key id; .crl is DER, .pem is PEM",
)
def crl(issuer: str, encoding: str, runtime: RuntimeDep) -> Response:
    if encoding not in ("crl", "pem"):
        raise NotFound("CRLs are served as .crl (DER) or .pem")
    revocation_list = runtime.authority.crl(issuer)
    if encoding == "pem":
        return Response(revocation_list.public_bytes(serialization.Encoding.PEM), media_type=PEM)
    return Response(
        revocation_list.public_bytes(serialization.Encoding.DER), media_type="application/pkix-crl"
    )
