"""The one interface every CA signature goes through: certificates, CRLs, OCSP responses.

A :class:`CASigner` holds a CA's key, wherever it lives: :class:`KeySigner` a key in
memory (decrypted from its file), :class:`imprint.pki.token.TokenSigner` a key in a
PKCS#11 token that never leaves it. Code that signs asks the signer, never the key:

    certificate = signer.sign_certificate(builder)
    crl = signer.sign_crl(builder)
    response = signer.sign_ocsp(builder)

``cryptography``'s builders sign only with keys it holds itself. A signer whose key is
elsewhere lets the builder sign with a throw-away *stand-in* key of the same kind (so the
signature algorithm written into the signed part is the right one), then replaces the
stand-in's signature with one the real key makes over the very same bytes
(:meth:`CASigner.sign`). The result is parsed again, so a malformed splice fails here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from imprint.pki.keys import SigningKey, signature_hash

__all__ = ["CAPublicKey", "CASigner", "KeySigner", "SplicingSigner"]

CAPublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
_DER = Encoding.DER


class CASigner(ABC):
    """Signs with one CA key."""

    @abstractmethod
    def public_key(self) -> CAPublicKey:
        """The public half of the key."""

    @property
    def hash_algorithm(self) -> hashes.SHA256 | hashes.SHA384:
        """The digest every signature of this key uses (SHA-384 for P-384, else SHA-256)."""
        return signature_hash(self.public_key())

    @abstractmethod
    def sign(self, data: bytes) -> bytes:
        """The signature over ``data`` as X.509 carries it: an ECDSA signature DER-encoded,
        or an RSA PKCS#1 v1.5 signature, with :attr:`hash_algorithm`."""

    @abstractmethod
    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate: ...

    @abstractmethod
    def sign_crl(
        self, builder: x509.CertificateRevocationListBuilder
    ) -> x509.CertificateRevocationList: ...

    @abstractmethod
    def sign_ocsp(self, builder: ocsp.OCSPResponseBuilder) -> ocsp.OCSPResponse: ...

    @property
    def description(self) -> str:
        """Where the key is, for people (``file``, ``pkcs11:token/label``)."""
        return "file"


class KeySigner(CASigner):
    """A key this process holds (decrypted from its file)."""

    def __init__(self, key: SigningKey) -> None:
        self._key = key

    def public_key(self) -> CAPublicKey:
        return self._key.public_key()

    def sign(self, data: bytes) -> bytes:
        if isinstance(self._key, ec.EllipticCurvePrivateKey):
            return self._key.sign(data, ec.ECDSA(self.hash_algorithm))
        return self._key.sign(data, padding.PKCS1v15(), self.hash_algorithm)

    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        return builder.sign(self._key, self.hash_algorithm)

    def sign_crl(
        self, builder: x509.CertificateRevocationListBuilder
    ) -> x509.CertificateRevocationList:
        return builder.sign(self._key, self.hash_algorithm)

    def sign_ocsp(self, builder: ocsp.OCSPResponseBuilder) -> ocsp.OCSPResponse:
        return builder.sign(self._key, self.hash_algorithm)


class SplicingSigner(CASigner):
    """A signer whose key ``cryptography`` cannot hold: builders sign with a stand-in key,
    whose signature is then replaced by :meth:`sign`'s over the same signed bytes."""

    def __init__(self) -> None:
        self._stand_in: SigningKey | None = None

    def _stand_in_key(self) -> SigningKey:
        if self._stand_in is None:
            public = self.public_key()
            if isinstance(public, ec.EllipticCurvePublicKey):
                self._stand_in = ec.generate_private_key(public.curve)
            else:
                self._stand_in = rsa.generate_private_key(65537, 2048)
        return self._stand_in

    def _resign(self, signed: bytes) -> bytes:
        """``signed`` (SEQUENCE {tbs, algorithm, BIT STRING, ...}) with a real signature."""
        tbs, algorithm, _signature, *rest = _elements(signed)
        value = self.sign(tbs)
        return _sequence(tbs, algorithm, _tlv(0x03, b"\x00" + value), *rest)

    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        stand_in = builder.sign(self._stand_in_key(), self.hash_algorithm)
        der = self._resign(stand_in.public_bytes(_DER))
        return x509.load_der_x509_certificate(der)

    def sign_crl(
        self, builder: x509.CertificateRevocationListBuilder
    ) -> x509.CertificateRevocationList:
        stand_in = builder.sign(self._stand_in_key(), self.hash_algorithm)
        return x509.load_der_x509_crl(self._resign(stand_in.public_bytes(_DER)))

    def sign_ocsp(self, builder: ocsp.OCSPResponseBuilder) -> ocsp.OCSPResponse:
        # cryptography checks the key against the responder's certificate: the stand-in
        # signs as a stand-in responder (same names, its own key), which is then swapped
        # back: in the responder id (by name: the same; by key: the real key's hash) and in
        # the certificates the response carries.
        #   OCSPResponse ::= SEQUENCE { status, [0] EXPLICIT SEQUENCE { type,
        #       OCTET STRING (BasicOCSPResponse ::= SEQUENCE { tbs, algorithm, signature,
        #       [0] EXPLICIT SEQUENCE OF Certificate }) } }
        responder, encoding = builder._responder_id or (None, None)
        if responder is None or encoding is None:
            raise ValueError("You must add a responder_id before signing")
        stand_in_responder = self._stand_in_certificate(responder)
        stand_in = ocsp.OCSPResponseBuilder(
            builder._response, (stand_in_responder, encoding), builder._certs, builder._extensions
        ).sign(self._stand_in_key(), self.hash_algorithm)
        status, explicit = _elements(stand_in.public_bytes(_DER))
        (response_bytes,) = _elements(explicit)
        kind, basic = _elements(response_bytes)
        tbs, algorithm, _signature, *rest = _elements(_content(basic))
        responder_id, *fields = _elements(tbs)
        if responder_id[0] == 0xA2:  # byKey
            key_hash = x509.SubjectKeyIdentifier.from_public_key(self.public_key()).digest
            responder_id = _tlv(0xA2, _tlv(0x04, key_hash))
        tbs = _sequence(responder_id, *fields)
        fake, real = stand_in_responder.public_bytes(_DER), responder.public_bytes(_DER)
        certificates = [
            _tlv(0xA0, _sequence(*(real if c == fake else c for c in _elements(_content(part)))))
            for part in rest
        ]
        signed = _sequence(tbs, algorithm, _tlv(0x03, b"\x00" + self.sign(tbs)), *certificates)
        outer = _tlv(0xA0, _sequence(kind, _tlv(0x04, signed)))
        return ocsp.load_der_ocsp_response(_sequence(status, outer))

    def _stand_in_certificate(self, certificate: x509.Certificate) -> x509.Certificate:
        key = self._stand_in_key()
        return (
            x509.CertificateBuilder()
            .subject_name(certificate.subject)
            .issuer_name(certificate.issuer)
            .public_key(key.public_key())
            .serial_number(certificate.serial_number)
            .not_valid_before(certificate.not_valid_before_utc)
            .not_valid_after(certificate.not_valid_after_utc)
            .sign(key, self.hash_algorithm)
        )


# A few lines of DER: enough to take a signed structure apart and put it back together.


def _header(data: bytes, offset: int) -> tuple[int, int]:
    """(where the content of the TLV at ``offset`` starts, its length)."""
    first = data[offset + 1]
    if first < 0x80:
        return offset + 2, first
    count = first & 0x7F
    length = int.from_bytes(data[offset + 2 : offset + 2 + count], "big")
    return offset + 2 + count, length


def _content(tlv: bytes) -> bytes:
    start, length = _header(tlv, 0)
    return tlv[start : start + length]


def _elements(tlv: bytes) -> list[bytes]:
    """The TLVs inside a constructed TLV (a SEQUENCE, an explicit tag)."""
    start, length = _header(tlv, 0)
    end, offset, found = start + length, start, []
    while offset < end:
        content, size = _header(tlv, offset)
        found.append(tlv[offset : content + size])
        offset = content + size
    return found


def _tlv(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes((tag, size)) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + content


def _sequence(*parts: bytes) -> bytes:
    return _tlv(0x30, b"".join(parts))
