"""Sealing secrets the server must read back (PSKs, group keys, OOB secrets).

Each secret is encrypted with AES-256-GCM under the key-encryption key (KEK), with
the place it belongs to as associated data, so a sealed value copied to another row
or field does not open. Secrets the server only verifies are hashed instead.

Sealed format: ``b"\\x01" + nonce (12 bytes) + ciphertext-and-tag``.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from imprint.errors import ConfigurationError, ImprintError
from imprint.settings import Settings

__all__ = ["SealedSecretInvalid", "SecretBox", "load_secret_box"]

_VERSION = b"\x01"
_NONCE = 12


class SealedSecretInvalid(ImprintError):
    code = "sealed_secret_invalid"


class SecretBox:
    """Seal and open small secrets under one key-encryption key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ConfigurationError("secrets.key must be 32 bytes (base64-encoded)")
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, context: str) -> bytes:
        """Encrypt ``plaintext``, bound to ``context`` (e.g. ``enrollment:ID:psk``)."""
        nonce = os.urandom(_NONCE)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, context.encode())

    def open(self, sealed: bytes, context: str) -> bytes:
        """Decrypt a value sealed for ``context``.

        Raises:
            SealedSecretInvalid: wrong key, wrong context, or tampered data.
        """
        if len(sealed) < 1 + _NONCE + 16 or sealed[:1] != _VERSION:
            raise SealedSecretInvalid("sealed secret has an unknown format")
        nonce, body = sealed[1 : 1 + _NONCE], sealed[1 + _NONCE :]
        try:
            return self._aead.decrypt(nonce, body, context.encode())
        except InvalidTag:
            raise SealedSecretInvalid(
                "sealed secret does not open: wrong key-encryption key or tampered data"
            ) from None


def _decode(text: str, origin: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError(f"{origin}: not base64") from None


def load_secret_box(settings: Settings, *, create: bool) -> SecretBox:
    """The box for the configured KEK; with ``create``, a new key file on first start.

    Raises:
        ConfigurationError: no usable key.
    """
    if settings.secrets.key is not None:
        return SecretBox(_decode(settings.secrets.key.get_secret_value(), "secrets.key"))
    path: Path = settings.secrets_key_path()
    if path.is_file():
        return SecretBox(_decode(path.read_text(encoding="ascii"), f"key file {path}"))
    if settings.secrets.key_file is not None or not create:
        raise ConfigurationError(f"secrets.key_file: {path} does not exist")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(base64.b64encode(key).decode() + "\n")
    return SecretBox(key)
