"""The device side of each mechanism's wire format, written from the protocol description.

Nothing here imports imprint's server code: the integration tests are what prove the
two sides agree. Every proof is bound to the CSR it travels with through
``csr_sha256`` (base64url, no padding, of SHA-256 over the CSR's DER) and carries a
fresh nonce, so each attempt builds its evidence anew.

========================  ==================================================================
mechanism                 ``evidence``
========================  ==================================================================
x509 (signed), renewal    ``{"jws": compact JWS}``, see :func:`signed_request`
symmetric-key             ``{"expiry", "nonce", "token"}``, see :func:`symmetric_key_evidence`
registration-key          nothing: the first key half goes in the ``X-Imprint-Key-Half`` header
oob-secret                ``{"timestamp", "nonce", "mac"}``, see :func:`oob_secret_evidence`
x509 (mTLS), client-ca    nothing: the certificate is shown in the TLS handshake
========================  ==================================================================
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from imprint.device.errors import VerificationFailed
from imprint.device.keys import PrivateKey

__all__ = [
    "JWS_TYPE",
    "KEY_HALF_HEADER",
    "SEAL_ALGORITHM",
    "check_response_mac",
    "csr_sha256",
    "derive_device_key",
    "new_nonce",
    "oob_secret_evidence",
    "open_sealed",
    "response_mac",
    "signed_request",
    "split_registration_key",
    "symmetric_key_evidence",
]

JWS_TYPE = "imprint-provision+jws"
KEY_HALF_HEADER = "X-Imprint-Key-Half"
SEAL_ALGORITHM = "HKDF-SHA256+A256GCM"
OOB_LABEL = "imprint-oob-v1"
SYMMETRIC_TOKEN_LIFETIME = 300  # seconds; the server accepts up to an hour
_SEAL_INFO = b"imprint bundle v1"
_MAC_INFO = b"imprint response mac v1"
_KEY_HALF = re.compile(r"[A-Z0-9]{8,32}")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _now(now: float | None) -> int:
    return int(time.time() if now is None else now)


def new_nonce() -> str:
    """32 random URL-safe characters: accepted by every mechanism's nonce rule."""
    return secrets.token_urlsafe(24)


def csr_sha256(csr: x509.CertificateSigningRequest) -> str:
    """base64url (no padding) of SHA-256 over the CSR's DER: what binds a proof to a CSR."""
    return _b64url(hashlib.sha256(csr.public_bytes(serialization.Encoding.DER)).digest())


# -- symmetric-key -------------------------------------------------------------------------


def derive_device_key(group_key: bytes, device_id: str) -> bytes:
    """One device's key in a symmetric-key group: HMAC-SHA256(group_key, device_id).

    Do this at the factory; a device should hold only its own key, never the group key.
    """
    return hmac.new(group_key, device_id.encode("utf-8"), hashlib.sha256).digest()


def symmetric_key_evidence(
    device_key: bytes,
    device_id: str,
    csr: x509.CertificateSigningRequest,
    *,
    now: float | None = None,
    nonce: str | None = None,
    lifetime: int = SYMMETRIC_TOKEN_LIFETIME,
) -> dict[str, Any]:
    """``{"expiry", "nonce", "token"}`` for a symmetric-key request.

    ``token = base64url(HMAC-SHA256(device_key, device_id "\\n" expiry "\\n" nonce "\\n"
    csr_sha256))`` with ``expiry`` in unix seconds (at most an hour ahead).
    """
    expiry = _now(now) + lifetime
    used = nonce or new_nonce()
    message = f"{device_id}\n{expiry}\n{used}\n{csr_sha256(csr)}".encode()
    token = _b64url(hmac.new(device_key, message, hashlib.sha256).digest())
    return {"expiry": expiry, "nonce": used, "token": token}


# -- oob-secret ----------------------------------------------------------------------------


def oob_secret_evidence(
    secret: str,
    device_id: str,
    csr: x509.CertificateSigningRequest,
    *,
    now: float | None = None,
    nonce: str | None = None,
) -> dict[str, Any]:
    """``{"timestamp", "nonce", "mac"}`` for an oob-secret request.

    ``mac = base64(HMAC-SHA256(secret, "imprint-oob-v1\\n" device_id "\\n" timestamp "\\n"
    nonce "\\n" csr_sha256))``, keyed with the secret's UTF-8 bytes; the timestamp must be
    within five minutes of the server's clock.
    """
    timestamp = _now(now)
    used = nonce or new_nonce()
    message = f"{OOB_LABEL}\n{device_id}\n{timestamp}\n{used}\n{csr_sha256(csr)}".encode()
    mac = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()
    return {"timestamp": timestamp, "nonce": used, "mac": base64.b64encode(mac).decode("ascii")}


# -- registration-key ----------------------------------------------------------------------


def split_registration_key(key: str) -> tuple[str, str]:
    """The two halves of a registration key such as ``HQ481047-1JWORF43``.

    Surrounding whitespace is dropped and letters are upper-cased, as people type keys.
    Only the first half is ever sent; the second half opens and authenticates the answer.

    Raises:
        ValueError: not two equally long halves of 8 to 32 ``A-Z 0-9`` joined by ``-``.
    """
    first, sep, second = key.strip().upper().partition("-")
    if (
        not sep
        or not _KEY_HALF.fullmatch(first)
        or not _KEY_HALF.fullmatch(second)
        or len(first) != len(second)
    ):
        raise ValueError(
            "a registration key is two halves of equal length, 8 to 32 of A-Z 0-9, joined by '-'"
        )
    return first, second


# -- signed requests (x509, renewal) -------------------------------------------------------


def _alg(key: PrivateKey) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        names = {"secp256r1": "ES256", "secp384r1": "ES384"}
        if key.curve.name not in names:
            raise ValueError("EC keys must be P-256 or P-384 to sign requests")
        return names[key.curve.name]
    if isinstance(key, rsa.RSAPrivateKey):
        return "PS256"
    return "EdDSA"


def _sign(alg: str, key: PrivateKey, data: bytes) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        digest = hashes.SHA256() if alg == "ES256" else hashes.SHA384()
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(digest)))
        size = (key.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")  # JWS wants raw r || s
    if isinstance(key, rsa.RSAPrivateKey):
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        return key.sign(data, pss, hashes.SHA256())
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    return key.sign(data)


def _json(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def signed_request(
    csr: x509.CertificateSigningRequest,
    key: PrivateKey,
    chain: Sequence[x509.Certificate],
    audience: str,
    *,
    now: float | None = None,
    nonce: str | None = None,
) -> str:
    """A compact JWS proving that the holder of ``chain[0]``'s key sent ``csr``.

    Header ``{"alg", "typ": "imprint-provision+jws", "x5c": [base64 DER, leaf first]}``,
    payload ``{"csr_sha256", "nonce", "iat", "aud"}``. ``alg`` follows the key: ES256 or
    ES384 for P-256 or P-384, PS256 for RSA, EdDSA for Ed25519.

    Args:
        csr: the request sent with the signature.
        key: the private key of ``chain[0]``.
        chain: the signer's certificate, then any intermediates.
        audience: the URL the server expects: its ``/api/v1/provision`` for x509, its
            ``/api/v1/renew`` for renewal (take both from the directory).

    Raises:
        ValueError: an empty chain, or a key that cannot sign requests.
    """
    if not chain:
        raise ValueError("the chain needs at least the signer's certificate")
    alg = _alg(key)
    header = {
        "alg": alg,
        "typ": JWS_TYPE,
        "x5c": [
            base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode("ascii")
            for c in chain
        ],
    }
    payload = {
        "csr_sha256": csr_sha256(csr),
        "nonce": nonce or new_nonce(),
        "iat": _now(now),
        "aud": audience,
    }
    signing_input = f"{_b64url(_json(header))}.{_b64url(_json(payload))}"
    return f"{signing_input}.{_b64url(_sign(alg, key, signing_input.encode('ascii')))}"


# -- the answer: response MAC and sealed secrets -------------------------------------------


def response_mac(secret: bytes, device_id: str, chain_pem: str) -> str:
    """What the server sends for a mechanism with a shared secret.

    ``base64url(HMAC-SHA256(HKDF-SHA256(secret, info="imprint response mac v1"),
    device_id "\\n" chain_pem))``.
    """
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_MAC_INFO).derive(secret)
    return _b64url(hmac.new(key, f"{device_id}\n{chain_pem}".encode(), hashlib.sha256).digest())


def check_response_mac(secret: bytes, device_id: str, chain_pem: str, received: object) -> None:
    """Compare the received MAC with the expected one, in constant time.

    Raises:
        VerificationFailed: the MAC is missing or wrong: the answer did not come from a
            server that knows the secret, or the chain was changed on the way.
    """
    if not isinstance(received, str) or not received:
        raise VerificationFailed("the answer has no response MAC, but this mechanism needs one")
    expected = response_mac(secret, device_id, chain_pem)
    if not hmac.compare_digest(expected.encode("ascii"), received.encode("utf-8")):
        raise VerificationFailed("the response MAC does not verify: do not trust this answer")


def open_sealed(secret: bytes, device_id: str, sealed: Mapping[str, Any]) -> dict[str, Any]:
    """Open secrets the server sealed for this device (HKDF-SHA256 + AES-256-GCM).

    The key is HKDF-SHA256(secret, salt, info="imprint bundle v1"); the device id is the
    associated data.

    Raises:
        VerificationFailed: an unknown algorithm, a malformed envelope, or a wrong secret,
            device id or tampered ciphertext.
    """
    if sealed.get("alg") != SEAL_ALGORITHM:
        raise VerificationFailed(f"unknown sealing algorithm {str(sealed.get('alg'))[:40]!r}")
    try:
        salt, nonce = _unb64url(sealed["salt"]), _unb64url(sealed["nonce"])
        ciphertext = _unb64url(sealed["ciphertext"])
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_SEAL_INFO).derive(secret)
        plaintext = AESGCM(key).decrypt(nonce, ciphertext, device_id.encode("utf-8"))
        opened = json.loads(plaintext)
    except (KeyError, TypeError, ValueError, InvalidTag):
        raise VerificationFailed(
            "the sealed secrets do not open with this device's secret"
        ) from None
    if not isinstance(opened, dict):
        raise VerificationFailed("the sealed secrets are not a JSON object")
    return opened
