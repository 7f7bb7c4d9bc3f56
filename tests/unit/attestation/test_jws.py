"""Compact JWS for signed provisioning requests: what verifies, and what is refused."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from imprint.attestation.base import KeyMismatch, RequestExpired, SignatureInvalid
from imprint.attestation.jws import (
    TYP,
    AudienceMismatch,
    SignedRequestMalformed,
    check_claims,
    csr_sha256,
    provision_payload,
    sign_compact,
    verify_compact,
)

AUD = "https://imprint.example/api/v1/provision"
NOW = datetime.now(UTC)
SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def _certificate(key: SigningKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device")])
    signer = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .sign(signer, hashes.SHA256())
    )


def _csr() -> x509.CertificateSigningRequest:
    key = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .sign(key, hashes.SHA256())
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _parts(token: str) -> tuple[dict[str, Any], str, str]:
    header, payload, signature = token.split(".")
    return json.loads(base64.urlsafe_b64decode(header + "==")), payload, signature


KEYS = {
    "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ES384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "RS256": lambda: rsa.generate_private_key(65537, 2048),
    "PS256": lambda: rsa.generate_private_key(65537, 2048),
    "EdDSA": ed25519.Ed25519PrivateKey.generate,
}


@pytest.mark.parametrize("alg", sorted(KEYS))
def test_every_algorithm_round_trips(alg: str) -> None:
    key = KEYS[alg]()
    certificate = _certificate(key)
    csr = _csr()
    token = sign_compact(provision_payload(csr, AUD, at=NOW), key, [certificate], alg=alg)

    verified = verify_compact(token)

    assert verified.header["alg"] == alg
    assert verified.header["typ"] == TYP
    assert verified.leaf == certificate
    nonce, iat = check_claims(verified, csr=csr, audience=AUD, at=NOW, max_skew_seconds=300)
    assert len(nonce) >= 16
    assert iat == int(NOW.timestamp())
    assert verified.payload["csr_sha256"] == csr_sha256(csr)


def test_ecdsa_signature_is_raw_r_and_s() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    token = sign_compact({"a": 1}, key, [_certificate(key)])
    signature = base64.urlsafe_b64decode(token.rsplit(".", 1)[1] + "==")
    assert len(signature) == 96  # RFC 7518 §3.4, not DER


def test_algorithm_must_fit_the_key() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    token = sign_compact({"a": 1}, key, [_certificate(key)])
    header, payload, signature = _parts(token)
    header["alg"] = "ES256"
    with pytest.raises(SignatureInvalid, match="does not fit"):
        verify_compact(f"{_b64(json.dumps(header).encode())}.{payload}.{signature}")
    with pytest.raises(ValueError, match="does not fit"):
        sign_compact({"a": 1}, key, [_certificate(key)], alg="RS256")


@pytest.mark.parametrize("alg", ["none", "HS256", "ES512", "RS512"])
def test_refused_algorithms(alg: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    token = sign_compact({"a": 1}, key, [_certificate(key)])
    header, payload, _signature = _parts(token)
    header["alg"] = alg
    forged_header = _b64(json.dumps(header).encode())
    # An HMAC keyed with the public certificate is the classic confusion attack.
    mac = hmac.HMAC(header["x5c"][0].encode(), hashes.SHA256())
    mac.update(f"{forged_header}.{payload}".encode())
    for signature in ("", _b64(mac.finalize())):
        with pytest.raises(SignatureInvalid, match="not accepted"):
            verify_compact(f"{forged_header}.{payload}.{signature}")


def test_a_changed_payload_does_not_verify() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    token = sign_compact({"nonce": "a" * 16}, key, [_certificate(key)])
    header, _payload, signature = _parts(token)
    forged = _b64(json.dumps({"nonce": "b" * 16}).encode())
    with pytest.raises(SignatureInvalid):
        verify_compact(f"{token.split('.')[0]}.{forged}.{signature}")
    assert header["typ"] == TYP


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"typ": "JWT"}, "typ"),
        ({"crit": ["exp"]}, "critical"),
        ({"x5c": []}, "x5c"),
        ({"x5c": ["not base64!"]}, r"x5c\[0\]"),
        ({"x5c": [base64.b64encode(b"\x30\x00").decode()]}, r"x5c\[0\]"),
        ({"alg": 256}, "alg"),
    ],
)
def test_malformed_headers(change: dict[str, Any], match: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    token = sign_compact({"a": 1}, key, [_certificate(key)])
    header, payload, signature = _parts(token)
    header.update(change)
    with pytest.raises(SignedRequestMalformed, match=match):
        verify_compact(f"{_b64(json.dumps(header).encode())}.{payload}.{signature}")


@pytest.mark.parametrize("token", [None, 42, "", "a.b", "a.b.c.d", "%%%.e30.", "e30.e30.e30"])
def test_not_a_compact_jws(token: object) -> None:
    with pytest.raises(SignedRequestMalformed):
        verify_compact(token)


def _verified(**claims: Any) -> tuple[Any, x509.CertificateSigningRequest]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = _csr()
    payload = {**provision_payload(csr, AUD, at=NOW), **claims}
    return verify_compact(sign_compact(payload, key, [_certificate(key)])), csr


@pytest.mark.parametrize(
    ("claims", "error"),
    [
        ({"nonce": "short"}, SignedRequestMalformed),
        ({"nonce": "has spaces in it, sadly"}, SignedRequestMalformed),
        ({"iat": True}, SignedRequestMalformed),
        ({"iat": "1700000000"}, SignedRequestMalformed),
        ({"csr_sha256": None}, SignedRequestMalformed),
        ({"aud": "https://other.example/api/v1/provision"}, AudienceMismatch),
        ({"iat": int((NOW - timedelta(seconds=301)).timestamp())}, RequestExpired),
        ({"iat": int((NOW + timedelta(seconds=301)).timestamp())}, RequestExpired),
        ({"csr_sha256": _b64(b"\x00" * 32)}, KeyMismatch),
    ],
)
def test_claims_that_are_refused(claims: dict[str, Any], error: type[Exception]) -> None:
    verified, csr = _verified(**claims)
    with pytest.raises(error):
        check_claims(verified, csr=csr, audience=AUD, at=NOW, max_skew_seconds=300)


def test_audience_may_be_a_list() -> None:
    verified, csr = _verified(aud=["https://a.example", AUD])
    check_claims(verified, csr=csr, audience=AUD, at=NOW, max_skew_seconds=300)
