"""CA material: create a root and an issuing CA, import your own, load it.

The keys are in files (encrypted) or, with ``ca.pkcs11.library`` set, in a PKCS#11 token
(:mod:`imprint.pki.token`), which then holds the CA certificates too; the files below
are then only a public copy of the certificates. Either way what signs is a
:class:`imprint.pki.signing.CASigner`.

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
from typing import TYPE_CHECKING

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
)
from imprint.pki.serials import random_serial
from imprint.pki.signing import CAPublicKey, CASigner, KeySigner
from imprint.settings import Settings

if TYPE_CHECKING:
    from imprint.pki.token import Pkcs11Token

__all__ = ["CAMaterial", "import_ca", "init_ca", "load_ca", "resolve_passphrase"]


@dataclass(frozen=True, slots=True)
class CAMaterial:
    """The loaded CA: certificates always, keys where we hold them."""

    root: x509.Certificate
    root_signer: CASigner | None
    issuing: x509.Certificate
    issuing_signer: CASigner
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
    public_key: CAPublicKey,
    issuer: x509.Certificate | None,
    signer: CASigner,
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
    return signer.sign_certificate(builder)


def _write_pem(path: Path, certificates: list[x509.Certificate]) -> None:
    """Write ``certificates`` to ``path`` whole or not at all: into a file of its own,
    then renamed over ``path``. Another worker, an operator's script or a client
    reading the trust anchor while the CA is first made never sees a part of it (one
    did, in a test that waits for ``root.crt``: "no certificate found")."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        partial.write_bytes(
            b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)
        )
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _has_material(settings: Settings, token: Pkcs11Token | None) -> bool:
    if token is not None:
        pkcs11 = settings.ca.pkcs11
        return bool(token.chain(pkcs11.issuing_key_label)) or token.has_key(
            pkcs11.issuing_key_label
        )
    files = settings.layout().ca
    return files.issuing_certificate.exists() or files.issuing_key.exists()


def _token(settings: Settings) -> Pkcs11Token | None:
    """The configured PKCS#11 token, logged in; None when the keys are in files."""
    if settings.ca.pkcs11.library is None:
        return None
    from imprint.pki.token import open_token

    return open_token(settings.ca.pkcs11)


def _write_certificates(files: CAFiles, chain: list[x509.Certificate]) -> None:
    files.directory.mkdir(parents=True, exist_ok=True)
    os.chmod(files.directory, 0o700)
    _write_pem(files.root_certificate, [chain[-1]])
    _write_pem(files.issuing_certificate, [chain[0]])
    _write_pem(files.chain, chain)


def init_ca(settings: Settings, *, force: bool = False) -> CAMaterial:
    """Create a root and an issuing CA: keys in encrypted files in the data directory, or
    made inside the PKCS#11 token when ``ca.pkcs11.library`` is set.

    Raises:
        Conflict: CA material exists and ``force`` is not set.
        CAKeyLocked, CAError: the token cannot be used (no PIN, a wrong one).
    """
    files = settings.layout().ca
    token = _token(settings)
    where = f"token {token.label!r}" if token else str(files.directory)
    if _has_material(settings, token) and not force:
        raise Conflict(f"a CA exists already in {where}; pass --force to replace it")
    key_type = settings.ca.key_type
    if token is None:
        passphrase = resolve_passphrase(settings, create=True)
        root_key, issuing_key = generate_key(key_type), generate_key(key_type)
        root_signer: CASigner = KeySigner(root_key)
        issuing_signer: CASigner = KeySigner(issuing_key)
    else:
        labels = settings.ca.pkcs11
        token.remove(labels.root_key_label, labels.issuing_key_label)
        root_signer = token.generate(labels.root_key_label, key_type)
        issuing_signer = token.generate(labels.issuing_key_label, key_type)
    now = datetime.now(UTC).replace(microsecond=0)
    root = _ca_certificate(
        subject=_name(settings.ca.root_name, settings.ca.organization),
        public_key=root_signer.public_key(),
        issuer=None,
        signer=root_signer,
        not_before=now - timedelta(minutes=5),
        not_after=now + timedelta(days=settings.ca.root_validity_days),
        path_length=1,
    )
    issuing = _ca_certificate(
        subject=_name(settings.ca.issuing_name, settings.ca.organization),
        public_key=issuing_signer.public_key(),
        issuer=root,
        signer=root_signer,
        not_before=now - timedelta(minutes=5),
        not_after=min(
            root.not_valid_after_utc, now + timedelta(days=settings.ca.issuing_validity_days)
        ),
        path_length=0,
    )
    if token is None:
        files.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(files.directory, 0o700)
        save_private_key(files.root_key, root_key, passphrase)
        save_private_key(files.issuing_key, issuing_key, passphrase)
    else:
        token.store_chain(settings.ca.pkcs11.issuing_key_label, [issuing, root])
        files.root_key.unlink(missing_ok=True)
        files.issuing_key.unlink(missing_ok=True)
    _write_certificates(files, [issuing, root])
    return CAMaterial(root, root_signer, issuing, issuing_signer, (issuing, root))


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


def _read_key(key: bytes, password: bytes | None) -> SigningKey:
    try:
        loaded = serialization.load_pem_private_key(key, password=password or None)
    except TypeError:
        raise InvalidValue("the CA key is encrypted: give its password") from None
    except ValueError:
        raise InvalidValue("the CA key cannot be read (wrong password or not a PEM key)") from None
    if not isinstance(loaded, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise InvalidValue("the CA key must be EC or RSA")
    return loaded


def _check_chain(
    issuing: x509.Certificate, above: list[x509.Certificate]
) -> list[x509.Certificate]:
    """The full chain, issuing CA first; checked to be CAs that lead to a root."""
    from imprint.pki.chain import verify_ca_chain

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
    if full_chain[-1].subject != full_chain[-1].issuer:
        raise InvalidValue("the chain must end with a self-signed root certificate")
    verify_ca_chain(full_chain)
    return full_chain


def import_ca(
    settings: Settings,
    *,
    certificate: bytes,
    key: bytes | None,
    chain: bytes | None,
    key_password: bytes | None,
    force: bool = False,
) -> CAMaterial:
    """Bring your own issuing CA: its certificate, its key and the chain above it.

    With keys in files, the key is re-encrypted with imprint's CA passphrase. With a
    PKCS#11 token, the key is put into the token (sensitive, not extractable), or, with
    no ``key``, the key already in the token under ``ca.pkcs11.issuing_key_label`` is
    used. When the certificate is a self-signed root, it serves as both root and
    issuing CA.

    Raises:
        InvalidValue: unparseable input, a key that does not match, a non-CA
            certificate, or a chain that does not lead to a self-signed root.
        Conflict: CA material exists and ``force`` is not set.
        CAError: no key given and none in the token, or the token's does not match.
    """
    files = settings.layout().ca
    token = _token(settings)
    labels = settings.ca.pkcs11
    issuing = _load_certificates(certificate, "the CA certificate")[0]
    above = _load_certificates(chain, "the chain") if chain else []
    issuing_key = None if key is None else _read_key(key, key_password)
    if issuing_key is None and token is None:
        raise InvalidValue("the CA key is needed (keys are in files, not in a PKCS#11 token)")
    if issuing_key is not None and not _same_key(issuing, issuing_key):
        raise InvalidValue("the key does not belong to the CA certificate")
    full_chain = _check_chain(issuing, above)
    root = full_chain[-1]
    if token is None:
        assert issuing_key is not None
        if _has_material(settings, None) and not force:
            raise Conflict(f"a CA exists already in {files.directory}; pass --force to replace it")
        passphrase = resolve_passphrase(settings, create=True)
        files.directory.mkdir(parents=True, exist_ok=True)
        files.root_key.unlink(missing_ok=True)  # stale, unless this import brings the root's
        save_private_key(files.issuing_key, issuing_key, passphrase)
        if root == issuing:
            save_private_key(files.root_key, issuing_key, passphrase)
        issuing_signer: CASigner = KeySigner(issuing_key)
    else:
        if token.chain(labels.issuing_key_label) and not force:
            raise Conflict(f"a CA exists already in token {token.label!r}; pass --force")
        token.remove(labels.root_key_label)  # stale: an imported CA brings no other root key
        if issuing_key is not None:
            token.remove(labels.issuing_key_label)
            issuing_signer = token.import_key(labels.issuing_key_label, issuing_key)
        else:
            token.remove_certificates(labels.issuing_key_label)
            public = issuing.public_key()
            if not isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
                raise InvalidValue("the CA key must be EC or RSA")
            issuing_signer = token.signer(labels.issuing_key_label, public)
        token.store_chain(labels.issuing_key_label, full_chain)
    _write_certificates(files, full_chain)
    root_signer = issuing_signer if root == issuing else None
    return CAMaterial(root, root_signer, issuing, issuing_signer, tuple(full_chain))


def load_ca(settings: Settings) -> CAMaterial:
    """Load the CA: from the data directory, or from the PKCS#11 token when configured.

    Raises:
        CANotInitialized: no CA there.
        CAKeyLocked: missing or wrong passphrase or PIN.
        UnencryptedCAKey: a plaintext key outside development mode.
        CAError: the token cannot be used, or its key does not match the certificate.
    """
    token = _token(settings)
    if token is not None:
        return _load_from_token(settings, token)
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
    return CAMaterial(
        root,
        None if root_key is None else KeySigner(root_key),
        chain[0],
        KeySigner(issuing_key),
        chain,
    )


def _load_from_token(settings: Settings, token: Pkcs11Token) -> CAMaterial:
    labels = settings.ca.pkcs11
    chain = token.chain(labels.issuing_key_label)
    if not chain:
        raise CANotInitialized(
            f"no CA in PKCS#11 token {token.label!r}; run 'imprint ca init' or 'imprint ca import'"
        )
    issuing, root = chain[0], chain[-1]

    def public(certificate: x509.Certificate) -> CAPublicKey:
        key = certificate.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
        return key

    issuing_signer = token.signer(labels.issuing_key_label, public(issuing))
    root_signer: CASigner | None = None
    if root == issuing:
        root_signer = issuing_signer
    elif token.has_key(labels.root_key_label):
        root_signer = token.signer(labels.root_key_label, public(root))
    files = settings.layout().ca
    if not files.chain.is_file():
        _write_certificates(files, chain)  # a public copy, for people and scripts
    return CAMaterial(root, root_signer, issuing, issuing_signer, tuple(chain))
