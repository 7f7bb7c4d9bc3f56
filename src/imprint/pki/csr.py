"""Certificate signing requests: parse, verify, and decide whether the key is acceptable.

Only the public key and (optionally) the subject's common name are ever taken from a
CSR. Its requested extensions are ignored: the profile decides every extension.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from imprint.errors import CSRSignatureInvalid, InvalidCSR, UnsupportedKey

__all__ = ["IssuablePublicKey", "common_name", "csr_sha256", "load_csr"]

IssuablePublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey

_CURVES = {"secp256r1", "secp384r1"}
_MAX_CSR_BYTES = 64 * 1024


def csr_sha256(csr: x509.CertificateSigningRequest) -> str:
    """base64url (no padding) of SHA-256 over the CSR's DER: what binds a signed request,
    a symmetric-key token or an OOB-secret MAC to the CSR sent with it."""
    digest = hashlib.sha256(csr.public_bytes(serialization.Encoding.DER)).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def load_csr(data: bytes | str) -> x509.CertificateSigningRequest:
    """Parse a PEM or DER CSR and check its self-signature and key.

    Raises:
        InvalidCSR: not a CSR.
        CSRSignatureInvalid: the signature does not match the key.
        UnsupportedKey: a curve or key size we do not issue for.
    """
    raw = data.encode("utf-8", "replace") if isinstance(data, str) else data
    if len(raw) > _MAX_CSR_BYTES:
        raise InvalidCSR("CSR is larger than 64 KiB")
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            csr = x509.load_pem_x509_csr(raw.strip())
        else:
            csr = x509.load_der_x509_csr(raw)
    except ValueError:
        raise InvalidCSR("not a PKCS#10 certificate signing request (PEM or DER)") from None
    check_public_key(csr.public_key())
    try:
        valid = csr.is_signature_valid
    except Exception:  # unsupported signature algorithms surface here
        valid = False
    if not valid:
        raise CSRSignatureInvalid("the CSR's signature does not verify with its public key")
    return csr


def check_public_key(key: object) -> IssuablePublicKey:
    """Accept EC P-256/P-384, RSA 2048..8192 and Ed25519 keys.

    Raises:
        UnsupportedKey: anything else.
    """
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _CURVES:
            raise UnsupportedKey(f"EC curve {key.curve.name} is not supported; use P-256 or P-384")
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if not 2048 <= key.key_size <= 8192:
            raise UnsupportedKey(f"RSA keys must be 2048 to 8192 bits, not {key.key_size}")
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    raise UnsupportedKey("only EC (P-256, P-384), RSA and Ed25519 keys are supported")


def common_name(csr: x509.CertificateSigningRequest) -> str | None:
    """The CSR subject's first common name, if it has one."""
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        return None
    value = names[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")
