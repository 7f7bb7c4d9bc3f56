"""Shared steps of the client-identity tests: user tokens through the real sign-in
(authorization code + PKCE over HTTPS), CSRs made the way a client makes them, and
``openssl verify`` on what comes back."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.integration.conftest import Service
from tests.integration.oauth_helpers import (
    PASSWORD,
    REDIRECT,
    code_from,
    login,
    make_client,
    make_org,
    make_user,
    pkce_pair,
)


def sign_in_client(admin: httpx.Client, org_id: str) -> str:
    """A public OAuth client for people's sign-in (authorization code + PKCE)."""
    client = make_client(
        admin,
        org_id,
        grant_types=["authorization_code"],
        redirect_uris=[REDIRECT],
        scopes=["openid"],
        public=True,
    )
    client_id: str = client["client_id"]
    return client_id


def user_token(service: Service, username: str, org_id: str, role: str = "operator") -> str:
    """Create ``org_id`` (if new) and a user with ``role`` in it, sign her in, return
    her access token (owner claim = ``org_id``)."""
    with service.admin() as admin:
        if admin.get(f"/api/v1/orgs/{org_id}").status_code == 404:
            make_org(admin, org_id)
        make_user(admin, username, org_id, role)
        client_id = sign_in_client(admin, org_id)
    token = sign_in(service, client_id, username, PASSWORD)
    assert token is not None
    return token


def sign_in(service: Service, client_id: str, username: str, password: str) -> str | None:
    """The access token of a sign-in (authorization code + PKCE) with this password;
    None when the sign-in form refuses it."""
    verifier, challenge = pkce_pair()
    answer = login(service, client_id, username, password, challenge)
    if answer.status_code != 303:
        return None
    with service.client() as http:
        token = http.post(
            "/oauth/token",
            data={
                "grant_type": "authorization_code",
                "code": code_from(answer),
                "redirect_uri": REDIRECT,
                "code_verifier": verifier,
                "client_id": client_id,
            },
        )
    assert token.status_code == 200, token.text
    access: str = token.json()["access_token"]
    return access


def make_csr(
    common_name: str = "d2d-client", key: ec.EllipticCurvePrivateKey | None = None
) -> tuple[ec.EllipticCurvePrivateKey, x509.CertificateSigningRequest]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return key, csr


def csr_pem(csr: x509.CertificateSigningRequest) -> str:
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def common_name_of(certificate: x509.Certificate) -> str:
    value = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert isinstance(value, str)
    return value


def openssl_verify(workdir: Path, chain_pem: str, anchors: list[str]) -> str:
    """``openssl verify`` of the chain's first certificate for TLS client use."""
    certificates = x509.load_pem_x509_certificates(chain_pem.encode())
    leaf, untrusted = workdir / "leaf.pem", workdir / "untrusted.pem"
    roots = workdir / "roots.pem"
    leaf.write_bytes(certificates[0].public_bytes(serialization.Encoding.PEM))
    untrusted.write_bytes(
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates[1:])
    )
    roots.write_text("".join(anchors))
    result = subprocess.run(
        [
            "openssl",
            "verify",
            "-purpose",
            "sslclient",
            "-CAfile",
            str(roots),
            "-untrusted",
            str(untrusted),
            str(leaf),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def certificate_count(service: Service) -> int:
    return len(service.runtime.ledger.search(limit=10_000))
