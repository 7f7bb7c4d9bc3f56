"""Shared steps of the OAuth, tenancy and audit tests: make organizations, users and
clients through the API, get tokens with httpx, and verify them with PyJWT."""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt

from tests.integration.conftest import Service

OWNER_CLAIM = "https://plgd.dev/owner"
REDIRECT = "http://127.0.0.1:9/callback"
PASSWORD = "correct horse battery"


def make_org(admin: httpx.Client, org_id: str, parent: str | None = None) -> None:
    body: dict[str, Any] = {"id": org_id, "name": f"Org {org_id}"}
    if parent is not None:
        body["parent_id"] = parent
    made = admin.post("/api/v1/orgs", json=body)
    assert made.status_code == 201, made.text


def make_user(admin: httpx.Client, username: str, org_id: str, role: str) -> str:
    made = admin.post(
        "/api/v1/users",
        json={"username": username, "password": PASSWORD, "org_id": org_id, "role": role},
    )
    assert made.status_code == 201, made.text
    user_id: str = made.json()["id"]
    return user_id


def make_client(
    admin: httpx.Client, org_id: str | None, role: str = "viewer", **fields: Any
) -> dict[str, Any]:
    made = admin.post(
        "/api/v1/oauth-clients", json={"name": "machine", "org_id": org_id, "role": role, **fields}
    )
    assert made.status_code == 201, made.text
    assert made.headers["cache-control"] == "no-store"
    created: dict[str, Any] = made.json()
    return created


def client_token(service: Service, client_id: str, secret: str, **form: str) -> httpx.Response:
    with service.client() as http:
        return http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", **form},
            auth=(client_id, secret),
        )


def token_for(service: Service, admin: httpx.Client, org_id: str, role: str) -> str:
    """An access token of a machine client with ``role`` in ``org_id``."""
    client = make_client(admin, org_id, role)
    answer = client_token(service, client["client_id"], client["client_secret"])
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["access_token"]
    return token


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def login(
    service: Service,
    client_id: str,
    username: str,
    password: str,
    challenge: str,
    **extra: str,
) -> httpx.Response:
    """Submit the sign-in form as a browser would; the answer is not followed."""
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "scope": "openid",
        "state": "st-123",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "nonce": "n-456",
        **extra,
    }
    with service.client() as http:
        page = http.get("/oauth/authorize", params=params)
        assert page.status_code == 200, page.text
        assert 'name="password"' in page.text or "name=password" in page.text
        return http.post(
            "/oauth/authorize", data={**params, "username": username, "password": password}
        )


def code_from(answer: httpx.Response) -> str:
    assert answer.status_code == 303, answer.text
    location = answer.headers["location"]
    assert location.startswith(REDIRECT + "?")
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == ["st-123"]
    return query["code"][0]


def jwks(service: Service) -> jwt.PyJWKSet:
    with service.client() as http:
        answer = http.get("/.well-known/jwks.json")
    assert answer.status_code == 200
    return jwt.PyJWKSet.from_dict(answer.json())


def verify(service: Service, token: str, audience: str | None = None) -> dict[str, Any]:
    """Verify with PyJWT against the JWKS fetched over HTTPS: not imprint's code path.

    Times are checked against the system's clock, allowing for how far a test moved the
    server's clock ahead.
    """
    header = jwt.get_unverified_header(token)
    key = jwks(service)[header["kid"]]
    claims: dict[str, Any] = jwt.decode(
        token,
        key,
        algorithms=["ES256"],
        audience=audience or service.base_url,
        issuer=service.base_url,
        options={"require": ["iss", "sub", "aud", "exp", "iat"]},
        leeway=service.clock.offset,
    )
    return claims


def bearer(service: Service, token: str) -> httpx.Client:
    return service.client(headers={"Authorization": f"Bearer {token}"})
