"""The device's keys: generate, write (mode 0600), load, and request a certificate (CSR).

The private key never leaves the device: imprint only ever sees the CSR.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

__all__ = [
    "Curve",
    "PrivateKey",
    "chain_pem",
    "generate_key",
    "load_certificates",
    "load_private_key",
    "make_csr",
    "private_key_pem",
    "public_key_der",
    "write_private_key",
]

Curve = Literal["p256", "p384"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
"""A key the SDK can sign with: the device's own (EC) or a manufacturer's (EC, RSA, Ed25519)."""

_CURVES: dict[str, ec.EllipticCurve] = {"p256": ec.SECP256R1(), "p384": ec.SECP384R1()}
MAX_COMMON_NAME = 64  # RFC 5280 ub-common-name


def generate_key(curve: Curve = "p256") -> ec.EllipticCurvePrivateKey:
    """A new EC key for the device's operational certificate.

    Args:
        curve: ``p256`` (default, what every imprint enrollment accepts) or ``p384``.

    Raises:
        ValueError: another curve.
    """
    if curve not in _CURVES:
        raise ValueError(f"curve must be one of {', '.join(_CURVES)}")
    return ec.generate_private_key(_CURVES[curve])


def private_key_pem(key: PrivateKey) -> bytes:
    """The key as unencrypted PEM PKCS#8 (protect the file, not the bytes)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_der(key: object) -> bytes:
    """SubjectPublicKeyInfo DER of a public key, or of a private key's public half."""
    public = key.public_key() if isinstance(key, PrivateKey) else key
    if not isinstance(
        public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
    ):
        raise TypeError("an EC, RSA or Ed25519 key is needed")
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def write_private_key(path: str | os.PathLike[str], key: PrivateKey) -> Path:
    """Write ``key`` to a new file readable only by its owner (mode 0600).

    The file is created exclusively: an existing file is never overwritten, so a key
    cannot be lost by accident. (:class:`~imprint.device.store.DeviceStore` replaces
    keys atomically when it has to.)

    Returns:
        The path written.

    Raises:
        FileExistsError: the file exists already.
    """
    target = Path(path)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_key_pem(key))
        handle.flush()
        os.fsync(handle.fileno())
    return target


def load_private_key(path: str | os.PathLike[str], password: bytes | None = None) -> PrivateKey:
    """Load a PEM (PKCS#8 or traditional) or DER private key.

    Raises:
        OSError: the file cannot be read.
        ValueError: not a key, a wrong password, or a key type the SDK cannot sign with.
    """
    data = Path(path).read_bytes()
    loader = (
        serialization.load_pem_private_key
        if b"-----BEGIN" in data
        else serialization.load_der_private_key
    )
    try:
        key = loader(data, password)
    except TypeError as exc:  # encrypted without a password, or the other way round
        raise ValueError(str(exc)) from None
    if not isinstance(key, PrivateKey):
        raise ValueError("the key must be EC, RSA or Ed25519")
    return key


def load_certificates(path: str | os.PathLike[str]) -> list[x509.Certificate]:
    """Every certificate of a PEM file (leaf first, as written), or of one DER certificate.

    Raises:
        OSError: the file cannot be read.
        ValueError: it holds no certificate.
    """
    data = Path(path).read_bytes()
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificates(data)
    return [x509.load_der_x509_certificate(data)]


def make_csr(key: PrivateKey, common_name: str | None = None) -> x509.CertificateSigningRequest:
    """A PKCS#10 request for ``key``, signed with it.

    The subject is only a hint (the server names the device from what it attested) and
    the request carries no extensions: the server takes those from its profile.

    Args:
        key: the device's new private key.
        common_name: e.g. the device id; empty subject when None.
    """
    attributes = []
    if common_name:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name[:MAX_COMMON_NAME]))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attributes))
    algorithm: hashes.SHA256 | hashes.SHA384 | None = hashes.SHA256()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        algorithm = None
    elif isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1":
        algorithm = hashes.SHA384()
    return builder.sign(key, algorithm)


def chain_pem(certificates: Sequence[x509.Certificate]) -> str:
    """The certificates as one PEM string, in the order given."""
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certificates)
