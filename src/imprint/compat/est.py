"""EST's wire format (RFC 7030, as clarified by RFC 8951): what the routes read and write.

* Requests: a PKCS#10 request, DER in base64 (``Content-Transfer-Encoding`` is ignored,
  RFC 8951 section 3), with ``Content-Type: application/pkcs10``.
* Certificates go back as a degenerate ("certs-only") PKCS#7 SignedData in base64.
* ``serverkeygen`` answers ``multipart/mixed``: the PKCS#8 private key, then the
  certificate (RFC 7030 section 4.4.2).
* ``csrattrs`` answers a DER ``CsrAttrs`` in base64 (section 4.5.2).
* Channel binding (section 3.5): the CSR's challengePassword holds base64 of the TLS
  connection's ``tls-unique`` value (TLS 1.2), or of its ``tls-exporter`` value (RFC
  9266) on TLS 1.3.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import AttributeOID, SignatureAlgorithmOID

from imprint.errors import InvalidCSR, InvalidRequest
from imprint.pki.csr import load_csr
from imprint.pki.der import encode_oid, encode_sequence, encode_set

__all__ = [
    "BindingMismatch",
    "BindingUnavailable",
    "certs_only",
    "check_channel_binding",
    "csr_attributes",
    "generated_request",
    "read_csr",
    "server_key_answer",
]

PKCS10 = "application/pkcs10"
CERTS_ONLY = "application/pkcs7-mime; smime-type=certs-only"
CSRATTRS = "application/csrattrs"
_EC_PUBLIC_KEY = x509.ObjectIdentifier("1.2.840.10045.2.1")
_RSA = x509.ObjectIdentifier("1.2.840.113549.1.1.1")
_CURVE_OIDS = {
    "ec-p256": x509.ObjectIdentifier("1.2.840.10045.3.1.7"),
    "ec-p384": x509.ObjectIdentifier("1.3.132.0.34"),
}
_MAX_BODY = 96 * 1024


class BindingMismatch(InvalidRequest):
    """The CSR's challengePassword is not this connection's tls-unique."""

    code = "channel_binding_mismatch"


class BindingUnavailable(InvalidRequest):
    """The enrollment requires channel binding, which this connection cannot carry."""

    code = "channel_binding_unavailable"


def read_csr(body: bytes) -> x509.CertificateSigningRequest:
    """The request of a ``simpleenroll``/``simplereenroll``/``serverkeygen`` body.

    Raises:
        InvalidCSR: not base64, or not a PKCS#10 request.
        CSRSignatureInvalid, UnsupportedKey: as :func:`imprint.pki.csr.load_csr`.
    """
    if len(body) > _MAX_BODY:
        raise InvalidCSR("the request is too large")
    try:
        der = base64.b64decode(b"".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidCSR("the body is not base64 (RFC 7030 and RFC 8951)") from None
    if not der:
        raise InvalidCSR("the body is empty")
    return load_csr(der)


def challenge_password(csr: x509.CertificateSigningRequest) -> bytes | None:
    """The CSR's challengePassword attribute, if it has one."""
    try:
        attribute = csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD)
    except x509.AttributeNotFound:
        return None
    return attribute.value


def check_channel_binding(
    csr: x509.CertificateSigningRequest, binding: bytes | None, *, required: bool
) -> bool:
    """Check the CSR's binding to the TLS connection; True if it was bound.

    ``binding`` is the connection's tls-unique (TLS 1.2) or tls-exporter (TLS 1.3) value.
    A CSR that carries a challengePassword must carry that value; one without is
    accepted unless ``required``.

    Raises:
        BindingUnavailable: binding is required and the connection has no binding value
            (TLS ends at a proxy, or this Python cannot export TLS 1.3 keying material).
        BindingMismatch: the value is missing where required, or another connection's.
    """
    presented = challenge_password(csr)
    if binding is None:
        if required:
            raise BindingUnavailable(
                "this enrollment requires TLS channel binding, which this connection cannot "
                "carry (TLS must end at imprint itself)"
            )
        return False
    if presented is None:
        if required:
            raise BindingMismatch(
                "this enrollment requires the TLS channel binding: put base64 of the "
                "connection's tls-unique (TLS 1.2) or tls-exporter (TLS 1.3) value in the "
                "CSR's challengePassword"
            )
        return False
    expected = base64.b64encode(binding)
    if not hmac.compare_digest(presented.strip(), expected):
        raise BindingMismatch("the CSR's challengePassword is not this connection's binding")
    return True


def certs_only(certificates: Sequence[x509.Certificate]) -> bytes:
    """A certs-only PKCS#7 in base64 with line breaks, as EST sends it."""
    der = pkcs7.serialize_certificates(list(certificates), serialization.Encoding.DER)
    return base64.b64encode(der)


def csr_attributes(key_types: Sequence[str], *, binding: bool) -> bytes:
    """``CsrAttrs`` in base64: challengePassword when binding is wanted, the preferred key
    (the enrollment's first key type) and ecdsa-with-SHA256 or sha256WithRSA."""
    items: list[bytes] = []
    if binding:
        items.append(encode_oid(AttributeOID.CHALLENGE_PASSWORD))
    preferred = key_types[0] if key_types else "ec-p256"
    curve = _CURVE_OIDS.get(preferred)
    if curve is not None:
        items.append(encode_sequence([encode_oid(_EC_PUBLIC_KEY), encode_set([encode_oid(curve)])]))
        digest = (
            SignatureAlgorithmOID.ECDSA_WITH_SHA384
            if preferred == "ec-p384"
            else SignatureAlgorithmOID.ECDSA_WITH_SHA256
        )
        items.append(encode_oid(digest))
    elif preferred.startswith("rsa-"):
        items.append(encode_oid(_RSA))
        items.append(encode_oid(SignatureAlgorithmOID.RSA_WITH_SHA256))
    return base64.b64encode(encode_sequence(items))


GeneratedKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def generated_request(
    client_csr: x509.CertificateSigningRequest, key_types: Sequence[str] = ()
) -> tuple[GeneratedKey, x509.CertificateSigningRequest]:
    """``serverkeygen``: a new key of the client CSR's kind (in memory only), and a CSR
    for it with the client CSR's subject, so that the one provisioning use case sees an
    ordinary request."""
    public = client_csr.public_key()
    key: GeneratedKey
    if isinstance(public, rsa.RSAPublicKey):
        key = rsa.generate_private_key(65537, max(public.key_size, 2048))
    elif isinstance(public, ed25519.Ed25519PublicKey):
        key = ed25519.Ed25519PrivateKey.generate()
    elif isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp384r1":
        key = ec.generate_private_key(ec.SECP384R1())
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    digest = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = x509.CertificateSigningRequestBuilder().subject_name(client_csr.subject).sign(key, digest)
    return key, csr


def server_key_answer(key: GeneratedKey, certificate: x509.Certificate) -> tuple[bytes, str]:
    """The ``multipart/mixed`` body and its content type: the private key (PKCS#8, not
    encrypted: the TLS connection protects it, RFC 7030 4.4.2) and the certificate."""
    boundary = f"est-{secrets.token_hex(12)}"
    pkcs8 = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    parts = [
        b"--" + boundary.encode(),
        b"Content-Type: application/pkcs8",
        b"Content-Transfer-Encoding: base64",
        b"",
        base64.encodebytes(pkcs8).rstrip(b"\n"),
        b"--" + boundary.encode(),
        b"Content-Type: " + CERTS_ONLY.encode(),
        b"Content-Transfer-Encoding: base64",
        b"",
        certs_only([certificate]).rstrip(b"\n"),
        b"--" + boundary.encode() + b"--",
        b"",
    ]
    return b"\r\n".join(parts), f"multipart/mixed; boundary={boundary}"
