"""The crypto floor: the cryptographic operations one registration needs, and nothing else.

Each primitive is timed on its own (best of a few rounds, one core, ``cryptography``
on the same OpenSSL the server uses), then summed per way of registering:

==================  ==============================================================
x509-signed         CSR verify + JWS verify + IDevID chain verify + leaf signature
x509-mtls (fresh)   TLS 1.3 handshake (ECDHE X25519 keygen + derive, server
                    CertificateVerify signature, client CertificateVerify check,
                    client chain verify) + CSR verify + IDevID chain verify + leaf
                    signature
oob-secret          CSR verify + HMAC + AES-GCM open of the sealed secret + HKDF
                    and HMAC of the response MAC + leaf signature
symmetric-key       CSR verify + 2 HMAC + leaf signature
csr-sign            CSR verify + leaf signature (the admin API and cfssl alike)
==================  ==============================================================

Keep-alive modes carry no handshake: one handshake serves thousands of requests.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from bench.load import idevid, new_csr
from imprint.attestation.x509 import _IDEVID_CA, _IDEVID_EE

MODES: dict[str, tuple[str, ...]] = {
    "x509-signed": ("csr_verify", "jws_verify", "chain_verify", "leaf_sign"),
    "x509-mtls": (
        "ecdhe_x25519",
        "tls_server_sign",
        "tls_client_verify",
        "tls_chain_verify",
        "csr_verify",
        "chain_verify",
        "leaf_sign",
    ),
    "oob-secret": ("csr_verify", "hmac", "aes_gcm_open", "hkdf_hmac", "leaf_sign"),
    "symmetric-key": ("csr_verify", "hmac", "hmac", "leaf_sign"),
    "csr-sign": ("csr_verify", "leaf_sign"),
}


def ca_certificate(name: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
                   issuer_key: ec.EllipticCurvePrivateKey,
                   organization: str | None = None) -> x509.Certificate:  # fmt: skip
    """A CA certificate for the bench (self-signed when ``issuer`` is None)."""
    now = datetime.now(UTC)
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, name)]
    if organization is not None:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    subject = x509.Name(attributes)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _time(operation: Callable[[], object], rounds: int = 5, seconds: float = 0.15) -> float:
    """Microseconds per call: the best round, each round about ``seconds`` long."""
    operation()
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            operation()
        if time.perf_counter() - start > seconds / 4:
            break
        calls *= 2
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            operation()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e6


def primitives(quick: bool = False) -> dict[str, float]:
    """Microseconds per primitive on this machine, now."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = ca_certificate("floor root", root_key, None, root_key)
    line_key = ec.generate_private_key(ec.SECP256R1())
    line = ca_certificate("floor line", line_key, root, root_key)
    leaf, leaf_key = idevid("floor-device", line, line_key)
    csr, csr_pem = new_csr("floor-device")
    data = os.urandom(600)
    signature = leaf_key.sign(data, ec.ECDSA(hashes.SHA256()))
    public = leaf_key.public_key()
    leaf_der = leaf.public_bytes(serialization.Encoding.DER)
    verifier = (  # the policies the x509 attestor uses
        PolicyBuilder()
        .store(Store([root]))
        .time(datetime.now(UTC))
        .extension_policies(ca_policy=_IDEVID_CA, ee_policy=_IDEVID_EE)
        .build_client_verifier()
    )
    issuing_key = ec.generate_private_key(ec.SECP256R1())
    issuing = ca_certificate("floor issuing", issuing_key, root, root_key)
    peer = x25519.X25519PrivateKey.generate().public_key()
    aead_key = os.urandom(32)
    nonce = os.urandom(12)
    sealed = AESGCM(aead_key).encrypt(nonce, b"s" * 32, b"context")

    def csr_verify() -> None:
        request = x509.load_pem_x509_csr(csr_pem.encode())
        assert request.is_signature_valid

    def jws_verify() -> None:
        key = cast(ec.EllipticCurvePublicKey, x509.load_der_x509_certificate(leaf_der).public_key())
        key.verify(signature, data, ec.ECDSA(hashes.SHA256()))

    def chain_verify() -> None:
        verifier.verify(leaf, [line])

    def leaf_sign() -> None:
        now = datetime.now(UTC)
        (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "floor-device")]))
            .issuer_name(issuing.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + timedelta(days=90))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False), True
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuing_key.public_key()),
                False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(csr.public_key()), False)
            .sign(issuing_key, hashes.SHA256())
            .public_bytes(serialization.Encoding.DER)
        )

    def ecdhe_x25519() -> None:
        x25519.X25519PrivateKey.generate().exchange(peer)

    def tls_server_sign() -> None:
        issuing_key.sign(data[:130], ec.ECDSA(hashes.SHA256()))

    def tls_client_verify() -> None:
        public.verify(signature, data, ec.ECDSA(hashes.SHA256()))

    def tls_chain_verify() -> None:
        cast(ec.EllipticCurvePublicKey, line.public_key()).verify(
            leaf.signature, leaf.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256())
        )
        cast(ec.EllipticCurvePublicKey, root.public_key()).verify(
            line.signature, line.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256())
        )

    def mac() -> None:
        hmac.new(aead_key, data[:200], hashlib.sha256).digest()

    def aes_gcm_open() -> None:
        AESGCM(aead_key).decrypt(nonce, sealed, b"context")

    def hkdf_hmac() -> None:
        derived = HKDF(hashes.SHA256(), 32, None, b"info").derive(aead_key)
        hmac.new(derived, data, hashlib.sha256).digest()

    operations: dict[str, Callable[[], object]] = {
        "csr_verify": csr_verify,
        "jws_verify": jws_verify,
        "chain_verify": chain_verify,
        "leaf_sign": leaf_sign,
        "ecdhe_x25519": ecdhe_x25519,
        "tls_server_sign": tls_server_sign,
        "tls_client_verify": tls_client_verify,
        "tls_chain_verify": tls_chain_verify,
        "hmac": mac,
        "aes_gcm_open": aes_gcm_open,
        "hkdf_hmac": hkdf_hmac,
    }
    rounds = 3 if quick else 7
    return {name: round(_time(op, rounds), 2) for name, op in operations.items()}


def floors(measured: dict[str, float]) -> dict[str, float]:
    """Microseconds of crypto per registration, by mode."""
    return {mode: round(sum(measured[p] for p in parts), 1) for mode, parts in MODES.items()}


if __name__ == "__main__":
    found = primitives()
    print(found)
    print(floors(found))
