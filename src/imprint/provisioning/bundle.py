"""The provisioning bundle, and sealing its secrets for a device that holds a key.

A mechanism with a shared device secret (a registration-key half, an OOB secret)
can have the bundle's secrets encrypted for the device: AES-256-GCM under a key that
HKDF-SHA256 derives from that secret with a random salt, the device id as associated
data. The device derives the same key and opens it; nobody else can.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "SEAL_ALGORITHM",
    "Bundle",
    "ChannelGrant",
    "open_for_device",
    "response_mac",
    "seal_for_device",
]

SEAL_ALGORITHM = "HKDF-SHA256+A256GCM"
_INFO = b"imprint bundle v1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(secret: bytes, salt: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_INFO).derive(secret)


def seal_for_device(secret: bytes, device_id: str, payload: Mapping[str, Any]) -> dict[str, str]:
    """Encrypt ``payload`` (JSON) so that only a holder of ``secret`` can read it."""
    salt, nonce = os.urandom(16), os.urandom(12)
    ciphertext = AESGCM(_key(secret, salt)).encrypt(
        nonce, json.dumps(payload, separators=(",", ":")).encode(), device_id.encode()
    )
    return {
        "alg": SEAL_ALGORITHM,
        "salt": _b64(salt),
        "nonce": _b64(nonce),
        "ciphertext": _b64(ciphertext),
    }


def open_for_device(secret: bytes, device_id: str, sealed: Mapping[str, str]) -> dict[str, Any]:
    """The device side of :func:`seal_for_device`.

    Raises:
        cryptography.exceptions.InvalidTag: wrong secret, device id, or tampered data.
        ValueError: an unknown algorithm.
    """
    if sealed.get("alg") != SEAL_ALGORITHM:
        raise ValueError(f"unknown sealing algorithm {sealed.get('alg')!r}")
    key = _key(secret, _unb64(sealed["salt"]))
    plaintext = AESGCM(key).decrypt(
        _unb64(sealed["nonce"]), _unb64(sealed["ciphertext"]), device_id.encode()
    )
    result: dict[str, Any] = json.loads(plaintext)
    return result


def response_mac(secret: bytes, device_id: str, chain_pem: str) -> str:
    """Authenticates the answer to a device that shares ``secret`` with the server.

    base64url(HMAC-SHA256(HKDF-SHA256(secret, info="imprint response mac v1"),
    device_id + "\n" + chain_pem)); the device recomputes it before trusting the chain.
    """
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"imprint response mac v1"
    ).derive(secret)
    mac = hmac.new(key, f"{device_id}\n{chain_pem}".encode(), hashlib.sha256).digest()
    return _b64(mac)


@dataclass(frozen=True, slots=True)
class ChannelGrant:
    """The device's data channel; ``write_key`` is None when it travels sealed."""

    id: int
    write_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Bundle:
    """Everything a provisioned device receives.

    The certificate fields are None only for a device that registered without a key
    pair (the midPoint-style registration): it receives credentials, no certificate.
    """

    device_id: str
    owner: str
    enrollment_id: str
    serial: str | None
    certificate_pem: str | None
    chain_pem: str | None  # the certificate, then each CA below the root
    trust_anchors_pem: tuple[str, ...]
    not_after: datetime | None
    renew_after: datetime | None
    services: Mapping[str, str] = field(default_factory=dict)
    pre_shared_key: str | None = None
    tokens: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # {"hub": {...}}
    sealed: Mapping[str, str] | None = None
    response_mac: str | None = None
    channel: ChannelGrant | None = None
