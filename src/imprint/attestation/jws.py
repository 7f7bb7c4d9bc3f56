"""Signed provisioning requests: compact JWS (RFC 7515) with the signer's chain in ``x5c``.

A device behind a TLS-terminating proxy cannot show its manufacturer certificate in
the handshake, so it signs its request instead::

    header  {"alg": "ES256", "typ": "imprint-provision+jws", "x5c": [leaf, intermediates...]}
    payload {"csr_sha256": b64url(SHA-256(CSR DER)), "nonce": "...", "iat": 1700000000,
             "aud": "https://imprint.example/api/v1/provision"}

Only what is needed is implemented, with ``cryptography``: ES256, ES384, RS256, PS256
and EdDSA (Ed25519). ``alg`` must fit the key in ``x5c[0]``; ``none``, HMAC algorithms
and a ``crit`` header are refused. :func:`verify_compact` only proves that the holder
of the leaf's key signed the payload; whether that leaf may provision is for the
attestor to decide.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from imprint.attestation.base import (
    AttestationFailed,
    KeyMismatch,
    RequestExpired,
    SignatureInvalid,
)
from imprint.errors import InvalidRequest
from imprint.pki.csr import csr_sha256

__all__ = [
    "ALGORITHMS",
    "MAX_CHAIN",
    "TYP",
    "AudienceMismatch",
    "SignedRequestMalformed",
    "VerifiedJws",
    "check_claims",
    "csr_sha256",
    "provision_payload",
    "sign_compact",
    "verify_compact",
]

TYP = "imprint-provision+jws"
ALGORITHMS = ("ES256", "ES384", "RS256", "PS256", "EdDSA")
MAX_CHAIN = 10
MAX_TOKEN = 65_536
MIN_RSA_BITS = 2048
_NONCE = re.compile(r"[\x21-\x7e]{16,128}")

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
VerifyingKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey


class SignedRequestMalformed(InvalidRequest):
    """The ``jws`` evidence is not a compact JWS of the expected shape."""

    code = "jws_malformed"


class AudienceMismatch(AttestationFailed):
    """The signed request names another server."""

    code = "audience_mismatch"


@dataclass(frozen=True, slots=True)
class VerifiedJws:
    """A JWS whose signature verifies with the public key of ``chain[0]``."""

    header: Mapping[str, Any]
    payload: Mapping[str, Any]
    chain: tuple[x509.Certificate, ...]

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str, what: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise SignedRequestMalformed(f"jws: the {what} is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise SignedRequestMalformed(f"jws: the {what} is not base64url") from None


def provision_payload(
    csr: x509.CertificateSigningRequest,
    audience: str,
    *,
    nonce: str | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """The payload of a signed provisioning request for ``csr``.

    Args:
        csr: the request the device sends with it.
        audience: the server's provisioning URL, ``<base URL>/api/v1/provision``.
        nonce: default 32 random URL-safe characters.
        at: the issue time, default now.
    """
    return {
        "csr_sha256": csr_sha256(csr),
        "nonce": nonce or secrets.token_urlsafe(24),
        "iat": int((at or datetime.now(UTC)).timestamp()),
        "aud": audience,
    }


def _default_alg(key: SigningKey) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {"secp256r1": "ES256", "secp384r1": "ES384"}.get(key.curve.name, "unsupported")
    if isinstance(key, rsa.RSAPrivateKey):
        return "PS256"
    return "EdDSA"


def _check_alg(alg: str, key: VerifyingKey) -> None:
    """The algorithm must be one we accept and fit the key.

    Raises:
        SignatureInvalid: ``none``, an unknown algorithm, or one for another key type.
    """
    if alg not in ALGORITHMS:
        raise SignatureInvalid(f"jws: algorithm {alg[:20]!r} is not accepted")
    fits = {
        "ES256": isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1",
        "ES384": isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1",
        "RS256": isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS,
        "PS256": isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS,
        "EdDSA": isinstance(key, ed25519.Ed25519PublicKey),
    }[alg]
    if not fits:
        raise SignatureInvalid(f"jws: algorithm {alg} does not fit the key in x5c[0]")


def _pss() -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


def _sign(alg: str, key: SigningKey, data: bytes) -> bytes:
    if alg in ("ES256", "ES384"):
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        digest = hashes.SHA256() if alg == "ES256" else hashes.SHA384()
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(digest)))
        size = (key.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if alg == "RS256":
        assert isinstance(key, rsa.RSAPrivateKey)
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    if alg == "PS256":
        assert isinstance(key, rsa.RSAPrivateKey)
        return key.sign(data, _pss(), hashes.SHA256())
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    return key.sign(data)


def _verify(alg: str, key: VerifyingKey, signature: bytes, data: bytes) -> None:
    """Raises InvalidSignature (or ValueError for a malformed one)."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        size = (key.curve.key_size + 7) // 8
        if len(signature) != 2 * size:
            raise InvalidSignature
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        digest = hashes.SHA256() if alg == "ES256" else hashes.SHA384()
        key.verify(encode_dss_signature(r, s), data, ec.ECDSA(digest))
    elif isinstance(key, rsa.RSAPublicKey):
        scheme = padding.PKCS1v15() if alg == "RS256" else _pss()
        key.verify(signature, data, scheme, hashes.SHA256())
    else:
        key.verify(signature, data)


def _json(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def sign_compact(
    payload: Mapping[str, Any],
    key: SigningKey,
    chain: Sequence[x509.Certificate],
    *,
    alg: str | None = None,
    typ: str = TYP,
) -> str:
    """Sign ``payload`` as a compact JWS carrying ``chain`` (leaf first) in ``x5c``.

    Args:
        payload: the claims, usually from :func:`provision_payload`.
        key: the private key of ``chain[0]``.
        chain: the device certificate, then intermediates (the root may be left out).
        alg: default from the key: ES256/ES384 for P-256/P-384, PS256 for RSA, EdDSA.
        typ: the ``typ`` header.

    Returns:
        ``header.payload.signature``, each part base64url without padding.

    Raises:
        ValueError: the key does not fit the algorithm, or the chain is empty.
    """
    if not chain:
        raise ValueError("the chain needs at least the signer's certificate")
    algorithm = alg or _default_alg(key)
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unsupported algorithm {algorithm!r}")
    try:
        _check_alg(algorithm, key.public_key())
    except SignatureInvalid as exc:
        raise ValueError(exc.message) from None
    header = {
        "alg": algorithm,
        "typ": typ,
        "x5c": [
            base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in chain
        ],
    }
    signing_input = f"{_b64url(_json(header))}.{_b64url(_json(payload))}"
    signature = _sign(algorithm, key, signing_input.encode("ascii"))
    return f"{signing_input}.{_b64url(signature)}"


def _object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise SignedRequestMalformed(f"jws: the {what} is not JSON") from None
    if not isinstance(value, dict):
        raise SignedRequestMalformed(f"jws: the {what} is not a JSON object")
    return value


def _x5c(header: Mapping[str, Any]) -> tuple[x509.Certificate, ...]:
    entries = header.get("x5c")
    if not isinstance(entries, list) or not entries or len(entries) > MAX_CHAIN:
        raise SignedRequestMalformed(
            f"jws: the header needs x5c, 1 to {MAX_CHAIN} base64 DER certificates, leaf first"
        )
    chain = []
    for index, entry in enumerate(entries):
        try:
            if not isinstance(entry, str):
                raise ValueError
            chain.append(x509.load_der_x509_certificate(base64.b64decode(entry, validate=True)))
        except (binascii.Error, ValueError):
            raise SignedRequestMalformed(
                f"jws: x5c[{index}] is not a base64 DER certificate"
            ) from None
    return tuple(chain)


def verify_compact(token: object) -> VerifiedJws:
    """Parse a compact JWS and verify its signature with the key of its ``x5c`` leaf.

    Raises:
        SignedRequestMalformed: not a compact JWS with ``alg``, ``typ`` and ``x5c``.
        SignatureInvalid: a refused algorithm, one that does not fit the key, or a
            signature that does not verify.
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN or token.count(".") != 2:
        raise SignedRequestMalformed("jws: expected a compact JWS, header.payload.signature")
    header_b64, payload_b64, signature_b64 = token.split(".")
    header = _object(_b64url_decode(header_b64, "header"), "header")
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise SignedRequestMalformed("jws: the header has no alg")
    if header.get("typ") != TYP:
        raise SignedRequestMalformed(f"jws: the header's typ must be {TYP!r}")
    if "crit" in header:
        raise SignedRequestMalformed("jws: no critical header parameters are understood")
    chain = _x5c(header)
    key = chain[0].public_key()
    if not isinstance(key, VerifyingKey):
        raise SignatureInvalid("jws: the key in x5c[0] cannot sign requests")
    _check_alg(alg, key)
    signature = _b64url_decode(signature_b64, "signature")
    try:
        _verify(alg, key, signature, f"{header_b64}.{payload_b64}".encode("ascii"))
    except (InvalidSignature, ValueError):
        raise SignatureInvalid("jws: the signature does not verify") from None
    payload = _object(_b64url_decode(payload_b64, "payload"), "payload")
    return VerifiedJws(header=header, payload=payload, chain=chain)


def check_claims(
    verified: VerifiedJws,
    *,
    csr: x509.CertificateSigningRequest,
    audience: str,
    at: datetime,
    max_skew_seconds: int,
) -> tuple[str, int]:
    """Check the provisioning claims of a verified request.

    Returns:
        ``(nonce, iat)`` for the caller to record as used.

    Raises:
        SignedRequestMalformed: a claim is missing or of the wrong type.
        AudienceMismatch: ``aud`` is not this server's provisioning URL.
        RequestExpired: ``iat`` is more than ``max_skew_seconds`` away from ``at``.
        KeyMismatch: ``csr_sha256`` is not the hash of the CSR that came with it.
    """
    claims = verified.payload
    nonce, iat, digest = claims.get("nonce"), claims.get("iat"), claims.get("csr_sha256")
    aud = claims.get("aud")
    if not isinstance(nonce, str) or not _NONCE.fullmatch(nonce):
        raise SignedRequestMalformed("jws: nonce must be 16 to 128 printable ASCII characters")
    if not isinstance(iat, int) or isinstance(iat, bool):
        raise SignedRequestMalformed("jws: iat must be an integer (seconds since the epoch)")
    if not isinstance(digest, str):
        raise SignedRequestMalformed("jws: csr_sha256 is missing")
    audiences = aud if isinstance(aud, list) else [aud]
    if audience not in audiences:
        raise AudienceMismatch(f"jws: aud must be {audience!r}")
    if abs(at.timestamp() - iat) > max_skew_seconds:
        raise RequestExpired(f"jws: iat is more than {max_skew_seconds} s from the server's clock")
    expected = csr_sha256(csr)
    if not hmac.compare_digest(digest.encode(), expected.encode()):
        raise KeyMismatch("jws: csr_sha256 is not the hash of the CSR sent with it")
    return nonce, iat
