"""CA keys in a PKCS#11 token (an HSM, or SoftHSM2 in tests).

The token holds, under the labels of ``ca.pkcs11``:

- the issuing CA's private key (``issuing_key_label``) and, after ``imprint ca init``,
  the root's (``root_key_label``): made in the token, sensitive and not extractable, so
  they never leave it;
- the CA certificates, issuing CA first and root last, as certificate objects labelled
  ``issuing_key_label`` with ``CKA_ID`` 0, 1, ...: with them in the token a node needs
  nothing on disk but its configuration and the PIN.

Signing goes through :class:`TokenSigner`, a :class:`imprint.pki.signing.CASigner`. One
logged-in session per process and token signs, one signature at a time (a PKCS#11
session runs one operation at a time); a signature costs about 0.2 ms in SoftHSM2.

The user PIN comes from the ``IMPRINT_PKCS11_PIN`` environment variable or the file named
by ``ca.pkcs11.pin_file``; never from the configuration file.
"""

from __future__ import annotations

import hmac
import os
import threading
from collections.abc import Sequence
from typing import Any

import pkcs11
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, CertificateType, KeyType, Mechanism, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters

from imprint.errors import CAError, CAKeyLocked
from imprint.pki.keys import SigningKey
from imprint.pki.signing import CAPublicKey, SplicingSigner
from imprint.settings import PKCS11_PIN_ENV, Pkcs11Settings
from imprint.settings import KeyType as CAKeyType

__all__ = ["Pkcs11Token", "TokenSigner", "open_token", "resolve_pin"]

_CURVES = {CAKeyType.EC_P256: "secp256r1", CAKeyType.EC_P384: "secp384r1"}
_RSA_MECHANISMS = {"sha256": Mechanism.SHA256_RSA_PKCS, "sha384": Mechanism.SHA384_RSA_PKCS}
# The library objects by module path, and the process that initialized each: a child
# made by fork(2) must initialize the module again before using it (PKCS#11 says so).
_initialized_in: dict[str, int] = {}


def resolve_pin(config: Pkcs11Settings) -> str:
    """The user PIN, from ``IMPRINT_PKCS11_PIN`` or ``ca.pkcs11.pin_file``.

    Raises:
        CAKeyLocked: neither holds one.
    """
    value = os.environ.get(PKCS11_PIN_ENV)
    if value:
        return value
    if config.pin_file is not None:
        try:
            pin = config.pin_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CAKeyLocked(
                f"ca.pkcs11.pin_file: cannot read {config.pin_file}: {exc.strerror}"
            ) from None
        if pin:
            return pin
        raise CAKeyLocked(f"ca.pkcs11.pin_file: {config.pin_file} is empty")
    raise CAKeyLocked(f"the PKCS#11 PIN is not set: set {PKCS11_PIN_ENV} or ca.pkcs11.pin_file")


def _library(path: str) -> Any:
    try:
        library = pkcs11.lib(path)
    except (OSError, RuntimeError, pkcs11.PKCS11Error) as exc:
        raise CAError(f"ca.pkcs11.library: cannot load {path}: {exc}") from None
    if _initialized_in.get(path, os.getpid()) != os.getpid():
        library.reinitialize()
    _initialized_in[path] = os.getpid()
    return library


class Pkcs11Token:
    """A logged-in session on one token."""

    def __init__(self, config: Pkcs11Settings, pin: str) -> None:
        assert config.library is not None
        self.label = config.token_label
        library = _library(str(config.library))
        try:
            token = library.get_token(token_label=config.token_label)
        except pkcs11.NoSuchToken:
            raise CAError(f"no PKCS#11 token labelled {config.token_label!r}") from None
        except pkcs11.MultipleTokensReturned:
            raise CAError(f"several PKCS#11 tokens are labelled {config.token_label!r}") from None
        try:
            self._session = token.open(rw=True, user_pin=pin)
        except pkcs11.PinIncorrect:
            raise CAKeyLocked(f"wrong PIN for PKCS#11 token {config.token_label!r}") from None
        except pkcs11.PKCS11Error as exc:
            raise CAError(f"cannot open PKCS#11 token {config.token_label!r}: {exc!r}") from None
        self.lock = threading.Lock()

    def _private_key(self, label: str) -> Any | None:
        with self.lock:
            found = list(
                self._session.get_objects(
                    {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: label}
                )
            )
        if len(found) > 1:
            raise CAError(f"several private keys in the token are labelled {label!r}")
        return found[0] if found else None

    def has_key(self, label: str) -> bool:
        return self._private_key(label) is not None

    def signer(self, label: str, public_key: CAPublicKey) -> TokenSigner:
        """The signer of the private key ``label``, whose public half is ``public_key``
        (from its certificate); checked by a test signature.

        Raises:
            CAError: no such key, or it does not belong to ``public_key``.
        """
        key = self._private_key(label)
        if key is None:
            raise CAError(f"no private key labelled {label!r} in token {self.label!r}")
        signer = TokenSigner(self, key, public_key, label)
        signer.check()
        return signer

    def generate(self, label: str, key_type: CAKeyType) -> TokenSigner:
        """Make a key pair in the token: the private key sensitive and not extractable."""
        private = {
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.SIGN: True,
        }
        public_template = {Attribute.TOKEN: True, Attribute.VERIFY: True}
        with self.lock:
            if key_type is CAKeyType.RSA_3072:
                public, key = self._session.generate_keypair(
                    KeyType.RSA, 3072, store=True, label=label,
                    private_template=private, public_template=public_template,
                )  # fmt: skip
                public_key: CAPublicKey = rsa.RSAPublicNumbers(
                    int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big"),
                    int.from_bytes(public[Attribute.MODULUS], "big"),
                ).public_key()
            else:
                parameters = self._session.create_domain_parameters(
                    KeyType.EC,
                    {Attribute.EC_PARAMS: encode_named_curve_parameters(_CURVES[key_type])},
                    local=True,
                )
                public, key = parameters.generate_keypair(
                    store=True, label=label,
                    private_template=private, public_template=public_template,
                )  # fmt: skip
                from pkcs11.util.ec import encode_ec_public_key

                loaded = serialization.load_der_public_key(encode_ec_public_key(public))
                assert isinstance(loaded, ec.EllipticCurvePublicKey)
                public_key = loaded
        return TokenSigner(self, key, public_key, label)

    def import_key(self, label: str, key: SigningKey) -> TokenSigner:
        """Put an existing key into the token (sensitive, not extractable from then on)."""
        common = {
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.SIGN: True,
            Attribute.LABEL: label,
            Attribute.CLASS: ObjectClass.PRIVATE_KEY,
        }
        if isinstance(key, ec.EllipticCurvePrivateKey):
            size = (key.curve.key_size + 7) // 8
            attributes = {
                **common,
                Attribute.KEY_TYPE: KeyType.EC,
                Attribute.EC_PARAMS: encode_named_curve_parameters(key.curve.name),
                Attribute.VALUE: key.private_numbers().private_value.to_bytes(size, "big"),
            }
        else:
            numbers = key.private_numbers()

            def raw(value: int) -> bytes:
                return value.to_bytes((value.bit_length() + 7) // 8, "big")

            attributes = {
                **common,
                Attribute.KEY_TYPE: KeyType.RSA,
                Attribute.MODULUS: raw(numbers.public_numbers.n),
                Attribute.PUBLIC_EXPONENT: raw(numbers.public_numbers.e),
                Attribute.PRIVATE_EXPONENT: raw(numbers.d),
                Attribute.PRIME_1: raw(numbers.p),
                Attribute.PRIME_2: raw(numbers.q),
                Attribute.EXPONENT_1: raw(numbers.dmp1),
                Attribute.EXPONENT_2: raw(numbers.dmq1),
                Attribute.COEFFICIENT: raw(numbers.iqmp),
            }
        with self.lock:
            stored = self._session.create_object(attributes)
        signer = TokenSigner(self, stored, key.public_key(), label)
        signer.check()
        return signer

    def store_chain(self, label: str, chain: Sequence[x509.Certificate]) -> None:
        """Keep the CA certificates (issuing first, root last) as certificate objects."""
        with self.lock:
            for index, certificate in enumerate(chain):
                self._session.create_object(
                    {
                        Attribute.CLASS: ObjectClass.CERTIFICATE,
                        Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
                        Attribute.TOKEN: True,
                        Attribute.LABEL: label,
                        Attribute.ID: bytes((index,)),
                        Attribute.SUBJECT: certificate.subject.public_bytes(),
                        Attribute.VALUE: certificate.public_bytes(serialization.Encoding.DER),
                    }
                )

    def chain(self, label: str) -> list[x509.Certificate]:
        """The certificates stored by :meth:`store_chain` under ``label``, in order."""
        with self.lock:
            objects = list(
                self._session.get_objects(
                    {Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.LABEL: label}
                )
            )
            found = sorted((bytes(o[Attribute.ID]), bytes(o[Attribute.VALUE])) for o in objects)
        return [x509.load_der_x509_certificate(der) for _, der in found]

    def remove(self, *labels: str) -> None:
        """Delete every object carrying one of ``labels`` (``ca init --force``)."""
        with self.lock:
            for label in labels:
                for found in list(self._session.get_objects({Attribute.LABEL: label})):
                    found.destroy()

    def remove_certificates(self, label: str) -> None:
        """Delete the certificate objects labelled ``label`` (a CA imported again)."""
        with self.lock:
            query = {Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.LABEL: label}
            for found in list(self._session.get_objects(query)):
                found.destroy()


class TokenSigner(SplicingSigner):
    """A CA key inside a PKCS#11 token."""

    def __init__(self, token: Pkcs11Token, key: Any, public_key: CAPublicKey, label: str) -> None:
        super().__init__()
        self._token = token
        self._key = key
        self._public_key = public_key
        self._label = label

    def public_key(self) -> CAPublicKey:
        return self._public_key

    @property
    def description(self) -> str:
        return f"pkcs11:{self._token.label}/{self._label}"

    def sign(self, data: bytes) -> bytes:
        algorithm = self.hash_algorithm
        if isinstance(self._public_key, ec.EllipticCurvePublicKey):
            # SoftHSM2 (and many HSMs) offer plain CKM_ECDSA: the digest is made here.
            digest = hashes.Hash(algorithm)
            digest.update(data)
            with self._token.lock:
                raw = self._key.sign(digest.finalize(), mechanism=Mechanism.ECDSA)
            half = len(raw) // 2
            return encode_dss_signature(
                int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
            )
        with self._token.lock:
            return bytes(self._key.sign(data, mechanism=_RSA_MECHANISMS[algorithm.name]))

    def check(self) -> None:
        """Sign a test message and verify it with the public key.

        Raises:
            CAError: the key in the token does not belong to the public key.
        """
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric import padding

        probe = os.urandom(32)
        signature = self.sign(probe)
        try:
            if isinstance(self._public_key, ec.EllipticCurvePublicKey):
                self._public_key.verify(signature, probe, ec.ECDSA(self.hash_algorithm))
            else:
                self._public_key.verify(signature, probe, padding.PKCS1v15(), self.hash_algorithm)
        except InvalidSignature:
            raise CAError(
                f"the key {self._label!r} in the token does not belong to the CA certificate"
            ) from None


def open_token(config: Pkcs11Settings) -> Pkcs11Token:
    """Log in to the configured token (once per process: PKCS#11 logs in an application,
    not a session, so later calls share the first session).

    Raises:
        CAKeyLocked: no PIN, or a wrong one.
        CAError: the module or the token cannot be used.
    """
    pin = resolve_pin(config)
    place = (str(config.library), config.token_label, os.getpid())
    with _opening:
        known = _open.get(place)
        if known is not None:
            if not hmac.compare_digest(known[0], pin.encode()):
                raise CAKeyLocked(f"wrong PIN for PKCS#11 token {config.token_label!r}")
            return known[1]
        token = Pkcs11Token(config, pin)
        _open[place] = (pin.encode(), token)
        return token


_opening = threading.Lock()
_open: dict[tuple[str, str, int], tuple[bytes, Pkcs11Token]] = {}
