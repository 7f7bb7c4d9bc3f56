"""CA material on disk: create a root and an issuing CA, import your own, load it.

Layout of ``DATA_DIR/ca``::

    root.crt      the trust anchor (self-signed)
    root.key      its key, encrypted (absent after an import without the root key)
    issuing.crt   the CA that signs leaf certificates
    issuing.key   its key, encrypted
    chain.crt     issuing.crt followed by every CA above it, root last
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from imprint.errors import CAError, CAKeyLocked, CANotInitialized, Conflict, InvalidValue
from imprint.layout import CAFiles
from imprint.pki.keys import (
    SigningKey,
    generate_key,
    load_private_key,
    save_private_key,
    signature_hash,
)
from imprint.pki.serials import random_serial
from imprint.settings import Settings

__all__ = ["CAMaterial", "import_ca", "init_ca", "load_ca", "resolve_passphrase"]


@dataclass(frozen=True, slots=True)
class CAMaterial:
    """The loaded CA: certificates always, keys where we hold them."""

    root: x509.Certificate
    root_key: SigningKey | None
    issuing: x509.Certificate
    issuing_key: SigningKey
    chain: tuple[x509.Certificate, ...]  # issuing first, root last


def resolve_passphrase(settings: Settings, *, create: bool) -> bytes | None:
    """The CA key passphrase from settings or its file.

    With ``create`` and no passphrase anywhere, a random one is written to the
    default file (mode 0600) so zero-config starts still encrypt the keys.
    """
    if settings.ca.passphrase is not None:
        return settings.ca.passphrase.get_secret_value().encode("utf-8")
    path = settings.passphrase_path()
    if path.is_file():
        value = path.read_text(encoding="utf-8").strip()
        if not value:
            raise CAKeyLocked(f"passphrase file {path} is empty")
        return value.encode("utf-8")
    if settings.ca.passphrase_file is not None:
        raise CAKeyLocked(f"passphrase file {path} does not exist")
    if not create:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_urlsafe(32) + "\n")
    return path.read_text(encoding="utf-8").strip().encode("utf-8")


def _name(common_name: str, organization: str | None) -> x509.Name:
    attributes = []
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _ca_certificate(
    *,
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    issuer: x509.Certificate | None,
    signing_key: SigningKey,
    not_before: datetime,
    not_after: datetime,
    path_length: int,
) -> x509.Certificate:
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    aki = (
        x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        if issuer is None
        else x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
            issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        )
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer.subject)
        .public_key(public_key)
        .serial_number(random_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(aki, critical=False)
    )
    return builder.sign(signing_key, signature_hash(signing_key))


def _write_pem(path: Path, certificates: list[x509.Certificate]) -> None:
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates))


def _has_material(files: CAFiles) -> bool:
    return files.issuing_certificate.exists() or files.issuing_key.exists()


def init_ca(settings: Settings, *, force: bool = False) -> CAMaterial:
    """Create a root and an issuing CA in the data directory.

    Raises:
        Conflict: CA material exists and ``force`` is not set.
    """
    files = settings.layout().ca
    directory = files.directory
    if _has_material(files) and not force:
        raise Conflict(f"a CA exists already in {directory}; pass --force to replace it")
    passphrase = resolve_passphrase(settings, create=True)
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    now = datetime.now(UTC).replace(microsecond=0)
    root_key = generate_key(settings.ca.key_type)
    root_subject = _name(settings.ca.root_name, settings.ca.organization)
    root = _ca_certificate(
        subject=root_subject,
        public_key=root_key.public_key(),
        issuer=None,
        signing_key=root_key,
        not_before=now - timedelta(minutes=5),
        not_after=now + timedelta(days=settings.ca.root_validity_days),
        path_length=1,
    )
    issuing_key = generate_key(settings.ca.key_type)
    issuing = _ca_certificate(
        subject=_name(settings.ca.issuing_name, settings.ca.organization),
        public_key=issuing_key.public_key(),
        issuer=root,
        signing_key=root_key,
        not_before=now - timedelta(minutes=5),
        not_after=min(
            root.not_valid_after_utc, now + timedelta(days=settings.ca.issuing_validity_days)
        ),
        path_length=0,
    )
    save_private_key(files.root_key, root_key, passphrase)
    save_private_key(files.issuing_key, issuing_key, passphrase)
    _write_pem(files.root_certificate, [root])
    _write_pem(files.issuing_certificate, [issuing])
    _write_pem(files.chain, [issuing, root])
    return CAMaterial(root, root_key, issuing, issuing_key, (issuing, root))


def _load_certificates(data: bytes, what: str) -> list[x509.Certificate]:
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise InvalidValue(f"{what} is not a PEM or DER certificate") from None


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return constraints.ca and usage.key_cert_sign


def _same_key(certificate: x509.Certificate, key: SigningKey) -> bool:
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    return certificate.public_key().public_bytes(
        serialization.Encoding.DER, fmt
    ) == key.public_key().public_bytes(serialization.Encoding.DER, fmt)


def import_ca(
    settings: Settings,
    *,
    certificate: bytes,
    key: bytes,
    chain: bytes | None,
    key_password: bytes | None,
    force: bool = False,
) -> CAMaterial:
    """Bring your own issuing CA: its certificate, its key and the chain above it.

    The key is re-encrypted with imprint's CA passphrase. When the certificate is a
    self-signed root, it serves as both root and issuing CA.

    Raises:
        InvalidValue: unparseable input, a key that does not match, a non-CA
            certificate, or a chain that does not lead to a self-signed root.
        Conflict: CA material exists and ``force`` is not set.
    """
    from imprint.pki.chain import verify_ca_chain

    files = settings.layout().ca
    directory = files.directory
    if _has_material(files) and not force:
        raise Conflict(f"a CA exists already in {directory}; pass --force to replace it")
    issuing = _load_certificates(certificate, "the CA certificate")[0]
    above = _load_certificates(chain, "the chain") if chain else []
    try:
        issuing_key = serialization.load_pem_private_key(key, password=key_password or None)
    except TypeError:
        raise InvalidValue("the CA key is encrypted: give its password") from None
    except ValueError:
        raise InvalidValue("the CA key cannot be read (wrong password or not a PEM key)") from None
    if not isinstance(issuing_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise InvalidValue("the CA key must be EC or RSA")
    if not _same_key(issuing, issuing_key):
        raise InvalidValue("the key does not belong to the CA certificate")
    if not _is_ca(issuing):
        raise InvalidValue("the certificate is not a CA (basicConstraints CA and keyCertSign)")
    for ca_certificate in (issuing, *above):
        try:
            ca_certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        except x509.ExtensionNotFound:
            raise InvalidValue(
                f"CA certificate {ca_certificate.subject.rfc4514_string()} has no subject key "
                "identifier; imprint names issuers by it"
            ) from None
    full_chain = [issuing, *[c for c in above if c != issuing]]
    root = full_chain[-1]
    if root.subject != root.issuer:
        raise InvalidValue("the chain must end with a self-signed root certificate")
    verify_ca_chain(full_chain)
    passphrase = resolve_passphrase(settings, create=True)
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    files.root_key.unlink(missing_ok=True)  # stale, unless this import brings the root's
    root_key = issuing_key if root == issuing else None
    save_private_key(files.issuing_key, issuing_key, passphrase)
    if root_key is not None:
        save_private_key(files.root_key, root_key, passphrase)
    _write_pem(files.root_certificate, [root])
    _write_pem(files.issuing_certificate, [issuing])
    _write_pem(files.chain, full_chain)
    return CAMaterial(root, root_key, issuing, issuing_key, tuple(full_chain))


def load_ca(settings: Settings) -> CAMaterial:
    """Load the CA from the data directory.

    Raises:
        CANotInitialized: no CA there.
        CAKeyLocked: missing or wrong passphrase.
        UnencryptedCAKey: a plaintext key outside development mode.
    """
    files = settings.layout().ca
    directory = files.directory
    if not files.issuing_certificate.is_file() or not (files.issuing_key).is_file():
        raise CANotInitialized(
            f"no CA in {directory}; run 'imprint ca init' or 'imprint ca import'"
        )
    passphrase = resolve_passphrase(settings, create=False)
    allow_plain = settings.development
    try:
        chain = tuple(_load_certificates(files.chain.read_bytes(), "chain.crt"))
        root = _load_certificates(files.root_certificate.read_bytes(), "root.crt")[0]
    except (OSError, InvalidValue) as exc:
        raise CAError(f"CA files in {directory} are unreadable: {exc}") from None
    issuing_key = load_private_key(files.issuing_key, passphrase, allow_unencrypted=allow_plain)
    root_key_path = files.root_key
    root_key = (
        load_private_key(root_key_path, passphrase, allow_unencrypted=allow_plain)
        if root_key_path.is_file()
        else None
    )
    return CAMaterial(root, root_key, chain[0], issuing_key, chain)
