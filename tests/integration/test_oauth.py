"""The OAuth 2.0 server over real HTTPS: each grant with httpx, every token checked by
PyJWT against the JWKS we publish, and the RFC 6749 refusals."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from sqlalchemy.util.concurrency import await_, in_greenlet

from imprint.auth import oidc
from imprint.auth.codes import code_digest, new_authorization_code
from imprint.settings import Settings, load_settings
from tests.integration.conftest import Service, start_service
from tests.integration.oauth_helpers import (
    OWNER_CLAIM,
    PASSWORD,
    REDIRECT,
    bearer,
    client_token,
    code_from,
    login,
    make_client,
    make_org,
    make_user,
    pkce_pair,
    verify,
)
from tests.stopping import serving


def test_discovery_names_the_endpoints_and_the_jwks_holds_an_es256_key(service: Service) -> None:
    with service.client() as http:
        document = http.get("/.well-known/openid-configuration").json()
        keys = http.get(document["jwks_uri"].replace(service.base_url, "")).json()["keys"]
    assert document["issuer"] == service.base_url
    assert document["token_endpoint"] == f"{service.base_url}/oauth/token"
    assert document["authorization_endpoint"] == f"{service.base_url}/oauth/authorize"
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert set(document["grant_types_supported"]) == {
        "client_credentials",
        "authorization_code",
        "urn:ietf:params:oauth:grant-type:device_code",
    }
    assert document["device_authorization_endpoint"].endswith("/oauth/device_authorization")
    assert len(keys) == 1
    assert keys[0]["kty"] == "EC"
    assert keys[0]["crv"] == "P-256"
    assert keys[0]["alg"] == "ES256"
    assert "d" not in keys[0]  # never the private half


@pytest.mark.both_databases
def test_client_credentials_token_verifies_and_carries_the_owner_claim(service: Service) -> None:
    with service.admin() as admin:
        make_org(admin, "acme")
        client = make_client(admin, "acme", "operator", scopes=["openid", "devices"])
    answer = client_token(service, client["client_id"], client["client_secret"], scope="devices")
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    claims = verify(service, body["access_token"])
    assert claims["sub"] == client["client_id"]
    assert claims[OWNER_CLAIM] == "acme"
    assert claims["scope"] == "devices"
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["jti"]
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "ES256"
    # the same grant with the secret in the form (client_secret_post)
    with service.client() as http:
        posted = http.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": client["client_id"],
                "client_secret": client["client_secret"],
            },
        )
    assert posted.status_code == 200, posted.text
    assert verify(service, posted.json()["access_token"])["scope"] == "openid devices"
    # and the token opens the admin API for its organization
    with bearer(service, body["access_token"]) as http:
        seen = http.get("/api/v1/orgs")
    assert seen.status_code == 200, seen.text
    assert [o["id"] for o in seen.json()["items"]] == ["acme"]


@pytest.mark.both_databases
def test_a_token_is_issued_while_a_device_request_reloads_the_signing_keys(
    service: Service, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A device request verifying an access token reloads the signing keys now and then,
    under their lock. On PostgreSQL it runs as a greenlet on the event loop and holds the
    lock across the statement; the token endpoint, wanting the same lock, waits for it
    without stopping the loop (it used to take it on the loop's own thread: the server
    hung for good)."""
    with service.admin() as admin:
        make_org(admin, "acme")
        client = make_client(admin, "acme", "operator", scopes=["devices"])
    first = client_token(service, client["client_id"], client["client_secret"])
    assert first.status_code == 200, first.text
    tokens = service.runtime.tokens
    records = tokens._store
    load_keys = records.all
    reloading = threading.Event()

    def slow_load() -> Any:
        found = load_keys()
        if in_greenlet():  # PostgreSQL: the statement's wait, made longer
            reloading.set()
            await_(asyncio.sleep(0.5))
        return found

    monkeypatch.setattr(records, "all", slow_load)
    tokens._loaded_at = 0.0  # the next verification reloads the keys
    answers: dict[str, httpx.Response] = {}

    def device_request() -> None:
        with bearer(service, first.json()["access_token"]) as http:
            answers["device"] = http.post("/api/v1/certificates", json={})

    request = threading.Thread(target=device_request)
    request.start()
    assert reloading.wait(5 if backend == "postgresql" else 0.2) == (backend == "postgresql")
    started = time.monotonic()
    second = client_token(service, client["client_id"], client["client_secret"])
    request.join(10)
    assert second.status_code == 200, second.text
    assert time.monotonic() - started < 5
    # an access token is not an instance administrator's API key: refused, not hung
    assert answers["device"].status_code == 403, answers["device"].text


def test_token_endpoint_refusals_use_rfc6749_errors(service: Service) -> None:
    with service.admin() as admin:
        make_org(admin, "acme")
        client = make_client(admin, "acme", scopes=["openid"])
    cid, secret = client["client_id"], client["client_secret"]

    def error_of(answer: httpx.Response, status: int) -> str:
        assert answer.status_code == status, answer.text
        assert answer.headers["cache-control"] == "no-store"
        body = answer.json()
        assert secret not in answer.text
        return str(body["error"])

    wrong = client_token(service, cid, secret + "x")
    assert error_of(wrong, 401) == "invalid_client"
    assert wrong.headers["www-authenticate"].startswith("Basic")
    assert error_of(client_token(service, "cli-nobody", secret), 401) == "invalid_client"
    assert error_of(client_token(service, cid, secret, scope="admin"), 400) == "invalid_scope"
    with service.client() as http:
        no_grant = http.post("/oauth/token", data={}, auth=(cid, secret))
        unknown = http.post("/oauth/token", data={"grant_type": "password"}, auth=(cid, secret))
        as_json = http.post("/oauth/token", json={"grant_type": "client_credentials"})
        code_grant = http.post(
            "/oauth/token",
            data={"grant_type": "authorization_code", "code": "x", "redirect_uri": REDIRECT},
            auth=(cid, secret),
        )
        no_auth = http.post("/oauth/token", data={"grant_type": "client_credentials"})
    assert error_of(no_grant, 400) == "invalid_request"
    assert error_of(unknown, 400) == "unsupported_grant_type"
    assert error_of(as_json, 400) == "invalid_request"
    assert error_of(code_grant, 400) == "unauthorized_client"
    assert error_of(no_auth, 401) == "invalid_client"


def _code_client(service: Service) -> tuple[dict[str, Any], str]:
    with service.admin() as admin:
        make_org(admin, "acme")
        user_id = make_user(admin, "homer@simps.net", "acme", "admin")
        client = make_client(
            admin,
            "acme",
            grant_types=["authorization_code"],
            redirect_uris=[REDIRECT],
            scopes=["openid"],
            public=True,
        )
    assert client["client_secret"] is None
    return client, user_id


@pytest.mark.slow
@pytest.mark.both_databases
def test_authorization_code_with_pkce_logs_a_person_in(service: Service) -> None:
    client, user_id = _code_client(service)
    verifier, challenge = pkce_pair()
    wrong = login(service, client["client_id"], "homer@simps.net", "not the password", challenge)
    assert wrong.status_code == 401
    assert "Wrong user name or password" in wrong.text
    assert "location" not in wrong.headers
    code = code_from(login(service, client["client_id"], "Homer@Simps.net", PASSWORD, challenge))
    with service.client() as http:
        answer = http.post(
            "/oauth/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT,
                "code_verifier": verifier,
                "client_id": client["client_id"],
            },
        )
        assert answer.status_code == 200, answer.text
        claims = verify(service, answer.json()["access_token"])
        assert claims["sub"] == user_id
        assert claims[OWNER_CLAIM] == "acme"
        identity = verify(service, answer.json()["id_token"], audience=client["client_id"])
        assert identity["nonce"] == "n-456"
        assert identity["preferred_username"] == "homer@simps.net"
        again = http.post(
            "/oauth/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT,
                "code_verifier": verifier,
                "client_id": client["client_id"],
            },
        )
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"
    with bearer(service, answer.json()["access_token"]) as http:
        me = http.get("/api/v1/users")
    assert me.status_code == 200
    assert [u["username"] for u in me.json()["items"]] == ["homer@simps.net"]
    # The sign-in and the code's exchange are in the audit log; the reused code is not.
    logins = _audit(service, action="user.login", outcome="success")
    assert [(e["actor"], e["target_id"], e["details"]["client_id"]) for e in logins] == [
        ("user:homer@simps.net", user_id, client["client_id"])
    ]
    exchanges = _audit(service, action="authorization_code.exchange")
    assert [(e["actor"], e["target_id"], e["org_id"], e["outcome"]) for e in exchanges] == [
        (f"client:{client['client_id']}", user_id, "acme", "success")
    ]


def _audit(service: Service, **query: str) -> list[dict[str, Any]]:
    """The audit entries matching ``query``, oldest first, as the admin key reads them."""
    with service.admin() as admin:
        answer = admin.get("/api/v1/audit", params={**query, "limit": "100"})
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items[::-1]


@pytest.mark.slow
def test_wrong_verifier_and_expired_codes_are_invalid_grants(service: Service) -> None:
    client, user_id = _code_client(service)
    verifier, challenge = pkce_pair()
    code = code_from(login(service, client["client_id"], "homer@simps.net", PASSWORD, challenge))
    other_verifier, _ = pkce_pair()
    form = {
        "grant_type": "authorization_code",
        "redirect_uri": REDIRECT,
        "client_id": client["client_id"],
    }
    # an expired code, stored as the login would store it, only older than its lifetime
    expired, record = new_authorization_code(
        client_id=client["client_id"],
        user_id=user_id,
        org_id="acme",
        redirect_uri=REDIRECT,
        scope="openid",
        nonce=None,
        code_challenge=challenge,
        at=datetime.now(UTC) - timedelta(minutes=5),
        lifetime=timedelta(seconds=60),
    )
    service.runtime.authorization_codes.add(record)
    with service.client() as http:
        mismatch = http.post(
            "/oauth/token", data={**form, "code": code, "code_verifier": other_verifier}
        )
        retry = http.post("/oauth/token", data={**form, "code": code, "code_verifier": verifier})
        late = http.post("/oauth/token", data={**form, "code": expired, "code_verifier": verifier})
        other_redirect = code_from(
            login(service, client["client_id"], "homer@simps.net", PASSWORD, challenge)
        )
        moved = http.post(
            "/oauth/token",
            data={
                **form,
                "code": other_redirect,
                "code_verifier": verifier,
                "redirect_uri": "http://127.0.0.1:9/elsewhere",
            },
        )
    for answer in (mismatch, retry, late, moved):
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"] == "invalid_grant"
    assert service.runtime.authorization_codes.consume(code_digest(code), datetime.now(UTC)) is None
    # Each refused code was spent, and its refusal audited; the retry of a spent code
    # changed nothing and wrote nothing.
    refusals = _audit(service, action="authorization_code.exchange")
    assert [(e["outcome"], e["details"]["reason"]) for e in refusals] == [
        ("failure", "code_verifier does not match the code_challenge"),
        ("failure", "the code is unknown, expired, used, or for another client"),
        ("failure", "the code is unknown, expired, used, or for another client"),
    ]
    assert {e["actor"] for e in refusals} == {f"client:{client['client_id']}"}


def test_authorize_refuses_requests_without_pkce_or_with_a_foreign_redirect(
    service: Service,
) -> None:
    client, _ = _code_client(service)
    base = {"response_type": "code", "client_id": client["client_id"], "state": "s1"}
    with service.client() as http:
        no_pkce = http.get("/oauth/authorize", params={**base, "redirect_uri": REDIRECT})
        plain = http.get(
            "/oauth/authorize",
            params={
                **base,
                "redirect_uri": REDIRECT,
                "code_challenge": "a" * 43,
                "code_challenge_method": "plain",
            },
        )
        foreign = http.get(
            "/oauth/authorize", params={**base, "redirect_uri": "https://evil.example/cb"}
        )
        unknown = http.get("/oauth/authorize", params={**base, "client_id": "cli-none"})
    for answer in (no_pkce, plain):
        assert answer.status_code == 303
        assert answer.headers["location"].startswith(REDIRECT + "?error=invalid_request")
        assert "state=s1" in answer.headers["location"]
    for answer in (foreign, unknown):
        assert answer.status_code == 400
        assert "location" not in answer.headers
        assert answer.headers["x-frame-options"] == "DENY"


SEED_VALUES = """
auth:
  clients:
  - name: "plgd.dps"
    clientID: "test"
    clientSecret: "test"
    grantType: "clientCredentials"
    scopes: ['openid']
    audience: "https://api.example.com"
    redirectURL: "https://mock.plgd.cloud/things"
    owner: "1"
  - name: "plgd.web"
    clientID: "test"
    clientSecret: "test"
    redirectURL: "https://mock.plgd.cloud/things"
    scopes: ['openid']
    useInUi: true
"""


@pytest.fixture
def seeded(settings: Settings, tmp_path: Path) -> Iterator[Service]:
    config = tmp_path / "imprint.yaml"
    config.write_text(SEED_VALUES)
    clients = load_settings(config).auth
    yield from start_service(settings.model_copy(update={"auth": clients}), tmp_path)


def test_development_clients_from_yaml_use_the_seed_field_names(seeded: Service) -> None:
    answer = client_token(seeded, "test", "test")
    assert answer.status_code == 200, answer.text
    token = answer.json()["access_token"]
    claims = verify(seeded, token, audience="https://api.example.com")
    assert claims["sub"] == "test"
    assert claims[OWNER_CLAIM] == "1"
    assert claims["scope"] == "openid"
    with bearer(seeded, token) as http:
        refused = http.get("/api/v1/orgs")  # a token for the hub, not for imprint's API
    assert refused.status_code == 401
    assert client_token(seeded, "test", "wrong").json()["error"] == "invalid_client"
    with seeded.admin() as admin:
        listed = admin.get("/api/v1/oauth-clients").json()["items"]
    assert {(c["name"], c["configured"]) for c in listed} == {
        ("plgd.dps", True),
        ("plgd.web", True),
    }
    assert "test" not in json.dumps([c.get("client_secret") for c in listed])


# --- an external OpenID provider, served by a real local HTTP server -------------------


class _Provider:
    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        self.jwks = {"keys": [{**public, "kid": "ext-1", "alg": "RS256", "use": "sig"}]}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                documents = {
                    "/.well-known/openid-configuration": {
                        "issuer": provider.issuer,
                        "jwks_uri": f"{provider.issuer}/keys",
                    },
                    "/keys": provider.jwks,
                }
                body = json.dumps(documents.get(self.path, {})).encode()
                self.send_response(200 if self.path in documents else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def token(self, key: rsa.RSAPrivateKey | None = None, **claims: Any) -> str:
        now = int(time.time())
        payload = {
            "iss": self.issuer,
            "sub": "ext-user-1",
            "aud": "imprint-admin",
            "iat": now,
            "exp": now + 300,
            "https://plgd.dev/owner": "acme",
            "groups": ["operator"],
            **claims,
        }
        return jwt.encode(payload, key or self.key, algorithm="RS256", headers={"kid": "ext-1"})


@pytest.fixture
def provider() -> Iterator[_Provider]:
    made = _Provider()
    with serving(made.server):
        yield made


@pytest.fixture
def federated(settings: Settings, tmp_path: Path, provider: _Provider) -> Iterator[Service]:
    auth = settings.auth.model_copy(
        update={
            "oidc": settings.auth.oidc.model_copy(
                update={
                    "issuer": provider.issuer,
                    "audience": "imprint-admin",
                    "roles_claim": "groups",
                }
            )
        }
    )
    yield from start_service(settings.model_copy(update={"auth": auth}), tmp_path)


def test_an_external_providers_keys_are_fetched_off_the_event_loop(
    federated: Service, provider: _Provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A device route verifying a token of the external provider may first fetch the
    provider's keys over the network: in the thread pool, never on the event loop."""
    fetch = oidc._fetch_json
    loops: list[bool] = []

    def recorded(url: str) -> Any:
        loops.append(asyncio._get_running_loop() is not None)
        return fetch(url)

    monkeypatch.setattr(oidc, "_fetch_json", recorded)
    with federated.admin() as admin:
        make_org(admin, "acme")
    with bearer(federated, provider.token()) as http:
        answer = http.post("/api/v1/sign/identity-csr", json={})
    assert answer.status_code == 400, answer.text  # verified, then the missing CSR
    assert loops, "the provider's keys were not fetched"
    assert not any(loops)


def test_an_external_providers_tokens_are_verified_and_mapped(
    federated: Service, provider: _Provider
) -> None:
    with federated.admin() as admin:
        make_org(admin, "acme")
        make_org(admin, "acme-plant", parent="acme")
        make_org(admin, "globex")
    with bearer(federated, provider.token()) as http:
        seen = http.get("/api/v1/orgs")
        foreign = http.get("/api/v1/orgs/globex")
        sub_org = http.post("/api/v1/orgs", json={"name": "x", "parent_id": "acme"})
    assert seen.status_code == 200, seen.text
    assert {o["id"]: o["role"] for o in seen.json()["items"]} == {
        "acme": "operator",
        "acme-plant": "operator",
    }
    assert foreign.status_code == 404
    assert sub_org.status_code == 403
    assert sub_org.json()["code"] == "role_insufficient"
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused = {
        "wrong audience": provider.token(aud="someone-else"),
        "expired": provider.token(exp=int(time.time()) - 3600),
        "no owner": provider.token(**{"https://plgd.dev/owner": None}),
        "no role": provider.token(groups=["guest"]),
        "foreign key": provider.token(key=stranger),
        "other issuer": provider.token(iss="http://127.0.0.1:1"),
    }
    for reason, token in refused.items():
        with bearer(federated, token) as http:
            answer = http.get("/api/v1/orgs")
        assert answer.status_code == 401, reason
        assert answer.headers["content-type"] == "application/problem+json", reason


def test_a_token_of_deeply_nested_json_is_invalid_not_an_error(service: Service) -> None:
    nested = base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).decode().rstrip("=")
    with bearer(service, f"eyJhbGciOiJFUzI1NiJ9.{nested}.c2ln") as http:
        answer = http.get("/api/v1/orgs")
    assert answer.status_code == 401, answer.text
    assert answer.json()["code"] == "authentication_required"
