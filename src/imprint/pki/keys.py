"""Private keys: generation and encrypted storage of CA keys."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from imprint.errors import CAError, CAKeyLocked, UnencryptedCAKey
from imprint.settings import KeyType

__all__ = [
    "SigningKey",
    "generate_key",
    "key_description",
    "load_private_key",
    "public_key_sha256",
    "save_private_key",
    "signature_hash",
]

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def generate_key(key_type: KeyType) -> SigningKey:
    """A new private key of ``key_type``."""
    if key_type is KeyType.EC_P256:
        return ec.generate_private_key(ec.SECP256R1())
    if key_type is KeyType.EC_P384:
        return ec.generate_private_key(ec.SECP384R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


def signature_hash(
    key: SigningKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
) -> hashes.SHA256 | hashes.SHA384:
    """The digest to sign with (for a private key or its public half): SHA-384 for P-384
    and up, SHA-256 otherwise."""
    if (
        isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey)
        and key.curve.key_size >= 384
    ):
        return hashes.SHA384()
    return hashes.SHA256()


def key_description(public_key: object) -> str:
    """A short human name of a public key, e.g. ``EC P-256`` or ``RSA 3072``."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "EC P-256", "secp384r1": "EC P-384", "secp521r1": "EC P-521"}.get(
            public_key.curve.name, f"EC {public_key.curve.name}"
        )
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"RSA {public_key.key_size}"
    return type(public_key).__name__.removeprefix("_").replace("PublicKey", "")


def save_private_key(path: Path, key: SigningKey, passphrase: bytes | None) -> None:
    """Write ``key`` as PKCS#8 PEM, encrypted when a passphrase is given, mode 0600."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    os.chmod(path, 0o600)


def load_private_key(
    path: Path, passphrase: bytes | None, *, allow_unencrypted: bool
) -> SigningKey:
    """Read a CA key.

    Raises:
        CAKeyLocked: the key is encrypted and the passphrase is missing or wrong.
        UnencryptedCAKey: the key is plaintext and ``allow_unencrypted`` is false.
    """
    data = path.read_bytes()
    if b"PRIVATE KEY-----" not in data:
        raise CAError(f"CA key {path.name} is not a PEM private key")
    encrypted = b"ENCRYPTED" in data.split(b"\n", 1)[0] or b"Proc-Type: 4,ENCRYPTED" in data
    if not encrypted:
        if not allow_unencrypted:
            raise UnencryptedCAKey(
                f"CA key {path.name} is not encrypted; encrypt it or run in development mode"
            )
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise CAError(f"CA key {path.name} cannot be read") from None
    else:
        if not passphrase:
            raise CAKeyLocked(f"CA key {path.name} is encrypted and no passphrase is configured")
        try:
            key = serialization.load_pem_private_key(data, password=passphrase)
        except (ValueError, TypeError):
            raise CAKeyLocked(f"wrong passphrase for CA key {path.name}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CAKeyLocked(f"CA key {path.name} is neither EC nor RSA")
    return key


def public_key_sha256(public_key: object) -> str:
    """Hex SHA-256 of a public key's DER SubjectPublicKeyInfo (how devices' keys are kept)."""
    if not isinstance(
        public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
    ):
        raise TypeError("an EC, RSA or Ed25519 public key is needed")
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()
