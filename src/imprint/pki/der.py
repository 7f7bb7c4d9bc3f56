"""The little DER that cryptography does not expose: reading the subject public key bits
(OCSP's issuer key hash) and writing EST's CSR attributes (RFC 7030 4.5.2).

Only definite-length encodings, as DER requires; anything else is refused.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization

__all__ = [
    "DERError",
    "encode_oid",
    "encode_sequence",
    "encode_set",
    "read_tlv",
    "subject_public_key_bits",
]

SEQUENCE = 0x30
SET = 0x31
OBJECT_IDENTIFIER = 0x06
BIT_STRING = 0x03


class DERError(ValueError):
    """Not the DER this module expects."""


def read_tlv(data: bytes, offset: int = 0) -> tuple[int, bytes, int]:
    """One element at ``offset``: (tag, contents, offset after it).

    Raises:
        DERError: truncated, or not a definite length.
    """
    if offset + 2 > len(data):
        raise DERError("truncated element")
    tag, first = data[offset], data[offset + 1]
    offset += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or offset + count > len(data):
            raise DERError("bad length")
        length = int.from_bytes(data[offset : offset + count], "big")
        offset += count
    end = offset + length
    if end > len(data):
        raise DERError("truncated element")
    return tag, data[offset:end], end


def subject_public_key_bits(certificate: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING's bits, what OCSP's issuerKeyHash hashes."""
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    tag, body, _ = read_tlv(spki)
    if tag != SEQUENCE:
        raise DERError("SubjectPublicKeyInfo is not a SEQUENCE")
    _, _, offset = read_tlv(body)  # the AlgorithmIdentifier
    tag, bits, _ = read_tlv(body, offset)
    if tag != BIT_STRING or not bits:
        raise DERError("subjectPublicKey is not a BIT STRING")
    return bits[1:]  # after the unused-bits octet


def _length(size: int) -> bytes:
    if size < 0x80:
        return bytes([size])
    raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _element(tag: int, contents: bytes) -> bytes:
    return bytes([tag]) + _length(len(contents)) + contents


def encode_oid(oid: x509.ObjectIdentifier) -> bytes:
    """An OBJECT IDENTIFIER element."""
    arcs = [int(arc) for arc in oid.dotted_string.split(".")]
    body = bytearray([arcs[0] * 40 + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return _element(OBJECT_IDENTIFIER, bytes(body))


def encode_sequence(items: Sequence[bytes]) -> bytes:
    """A SEQUENCE of already-encoded elements."""
    return _element(SEQUENCE, b"".join(items))


def encode_set(items: Sequence[bytes]) -> bytes:
    """A SET OF already-encoded elements, in DER's sorted order."""
    return _element(SET, b"".join(sorted(items)))
