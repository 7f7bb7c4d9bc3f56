"""Certificate signing requests: what is accepted and how bad ones are refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from imprint.errors import CSRSignatureInvalid, InvalidCSR, UnsupportedKey
from imprint.pki.csr import check_public_key, common_name, load_csr

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def make_csr(key: PrivateKey, name: str | None = "sensor-0042") -> x509.CertificateSigningRequest:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)] if name else [])
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, algorithm)


@pytest.fixture(scope="module")
def p256_csr() -> x509.CertificateSigningRequest:
    return make_csr(ec.generate_private_key(ec.SECP256R1()))


def der(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.DER)


def pem(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.PEM)


def test_pem_and_der_csrs_are_both_accepted(p256_csr: x509.CertificateSigningRequest) -> None:
    assert load_csr(pem(p256_csr)) == p256_csr
    assert load_csr(der(p256_csr)) == p256_csr
    assert load_csr(pem(p256_csr).decode("ascii")) == p256_csr  # text as well as bytes
    assert load_csr(b"\n  " + pem(p256_csr) + b"\n\n") == p256_csr  # surrounding whitespace


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(lambda: ec.generate_private_key(ec.SECP256R1()), id="ec-p256"),
        pytest.param(lambda: ec.generate_private_key(ec.SECP384R1()), id="ec-p384"),
        pytest.param(lambda: rsa.generate_private_key(65537, 2048), id="rsa-2048"),
        pytest.param(ed25519.Ed25519PrivateKey.generate, id="ed25519"),
    ],
)
def test_supported_device_keys_are_accepted(key: object) -> None:
    csr = make_csr(key())  # type: ignore[operator]
    assert load_csr(der(csr)).public_key() == csr.public_key()


@pytest.mark.parametrize(
    "garbage",
    [b"", b"hello", b"\x30\x03\x02\x01\x01", b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"],
)
def test_garbage_is_not_a_csr(garbage: bytes) -> None:
    with pytest.raises(InvalidCSR) as caught:
        load_csr(garbage)
    assert caught.value.code == "csr_invalid"


def test_certificate_is_not_a_csr() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(InvalidCSR):
        load_csr(certificate.public_bytes(serialization.Encoding.PEM))


def test_csr_with_corrupted_signature_is_refused(p256_csr: x509.CertificateSigningRequest) -> None:
    data = bytearray(der(p256_csr))
    data[-1] ^= 0x01  # the last byte belongs to the signature value
    with pytest.raises(CSRSignatureInvalid) as caught:
        load_csr(bytes(data))
    assert caught.value.code == "csr_signature_invalid"


def test_csr_signed_by_another_key_is_refused() -> None:
    """A CSR carrying one public key but signed with a different private key."""
    signer = ec.generate_private_key(ec.SECP256R1())
    claimed = ec.generate_private_key(ec.SECP256R1())
    original = der(make_csr(signer))
    signer_spki = signer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claimed_spki = claimed.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    forged = original.replace(signer_spki, claimed_spki)
    assert forged != original
    with pytest.raises(CSRSignatureInvalid):
        load_csr(forged)


def test_p521_key_is_unsupported() -> None:
    with pytest.raises(UnsupportedKey, match="P-256 or P-384") as caught:
        load_csr(pem(make_csr(ec.generate_private_key(ec.SECP521R1()))))
    assert caught.value.code == "key_unsupported"


def test_rsa_1024_key_is_unsupported() -> None:
    with pytest.raises(UnsupportedKey, match="1024"):
        load_csr(pem(make_csr(rsa.generate_private_key(65537, 1024))))  # noqa: S505


def test_csr_over_64_kib_is_refused_before_parsing() -> None:
    with pytest.raises(InvalidCSR, match="64 KiB"):
        load_csr(b"-----BEGIN CERTIFICATE REQUEST-----\n" + b"A" * (64 * 1024))


def test_check_public_key_refuses_other_key_kinds() -> None:
    with pytest.raises(UnsupportedKey):
        check_public_key("not a key")
    with pytest.raises(UnsupportedKey):
        check_public_key(ec.generate_private_key(ec.SECP256R1()))  # private, not public


def test_common_name_is_taken_from_the_subject() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    assert common_name(make_csr(key, "sensor-0042")) == "sensor-0042"
    assert common_name(make_csr(key, None)) is None
