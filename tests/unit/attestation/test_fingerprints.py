"""The deny-list's and the CRL store's digests of a certificate: SHA-256 over its DER and
over its public key. Both keep their recent answers (the same manufacturer CAs are asked
about at every registration); a kept answer must still be that certificate's own."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from imprint.attestation.revocation import (
    _RECENT,
    _fingerprint,
    _key_digest,
    certificate_fingerprint,
    key_sha256,
)

NOW = datetime.now(UTC)
SIGNER = ec.generate_private_key(ec.SECP256R1())


def _certificate(serial: int, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"device-{serial}")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .sign(SIGNER, hashes.SHA256())
    )


def test_each_certificate_gets_its_own_names_past_the_answers_kept() -> None:
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(8)]
    certificates = [_certificate(n + 1, keys[n % len(keys)]) for n in range(_RECENT + 40)]
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    _fingerprint.cache_clear()
    _key_digest.cache_clear()
    # The second pass asks in the other order: the last ones asked are kept answers, the
    # first ones were pushed out and are worked out again.
    for order in (certificates, certificates[::-1]):
        for certificate in order:
            assert certificate_fingerprint(certificate) == (
                hashlib.sha256(certificate.public_bytes(der)).hexdigest()
            )
            assert key_sha256(certificate) == (
                hashlib.sha256(certificate.public_key().public_bytes(der, spki)).hexdigest()
            )
    assert _fingerprint.cache_info().hits >= _RECENT
    assert _key_digest.cache_info().hits >= _RECENT
    # The same certificate read again from its bytes is the same certificate.
    again = x509.load_der_x509_certificate(certificates[0].public_bytes(der))
    assert certificate_fingerprint(again) == certificate_fingerprint(certificates[0])
    # Certificates of one key share its key's name, and only that.
    assert key_sha256(certificates[0]) == key_sha256(certificates[len(keys)])
    assert key_sha256(certificates[0]) != key_sha256(certificates[1])
    assert len({certificate_fingerprint(c) for c in certificates}) == len(certificates)
