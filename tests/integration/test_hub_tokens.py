"""Hub tokens in the bundle over real HTTPS: from imprint's own OAuth server and from an
external token endpoint (a real local HTTP server), each checked for the owner claim,
and every refusal leaving no device and no certificate behind."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from imprint.attestation.jws import provision_payload, sign_compact
from imprint.provisioning.bundle import open_for_device
from imprint.store.tables import provisioning_records
from tests.integration.conftest import Service, ensure_org
from tests.integration.oauth_helpers import OWNER_CLAIM, make_client, make_org, verify
from tests.integration.test_registration_key import enrollment_with_key
from tests.integration.test_registration_key import provision as provision_with_key
from tests.integration.test_x509_attestation import Manufacturer, make_csr, signed_body
from tests.stopping import serving

HUB = "https://hub.example.com"
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def maker() -> Manufacturer:
    return Manufacturer.create("Hubbard")


def state(service: Service) -> tuple[int, int]:
    """(devices, certificate records): a refused request changes neither."""
    runtime = service.runtime
    return len(runtime.devices.search(limit=10_000)), len(runtime.ledger.search(limit=10_000))


def enroll(
    service: Service, maker: Manufacturer, enrollment_id: str, provider: dict[str, Any]
) -> dict[str, Any]:
    body = {
        "id": enrollment_id,
        "mechanism": "x509",
        "owner": "acme",
        "pre_shared_key": "0123456789012345",
        "x509": {"certificate_chain": maker.chain()},
        "hub": {"authorization": {"provider": provider}},
    }
    with service.admin() as admin:
        ensure_org(admin, "acme")
        created = admin.post("/api/v1/enrollments", json=body)
    assert created.status_code == 201, created.text
    shown: dict[str, Any] = created.json()
    return shown


def provision(service: Service, maker: Manufacturer, name: str, key: Any = None) -> httpx.Response:
    leaf, device_key = maker.line.idevid(name, key=key)
    body = signed_body(service, leaf, device_key, [maker.line.certificate])
    with service.client() as http:
        return http.post("/api/v1/provision", json=body)


def refused(response: httpx.Response, code: str, status: int = 502) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["code"] == code
    detail: str = problem["detail"]
    return detail


def failed_steps(service: Service, code: str) -> list[str]:
    """The steps recorded as failed with ``code`` (read from the table: no device owns them)."""
    query = select(provisioning_records.c.step).where(provisioning_records.c.code == code)
    with service.runtime.engine.connect() as conn:
        return [row.step for row in conn.execute(query)]


@pytest.mark.both_databases
def test_own_server_token_verifies_and_a_retry_gets_the_same_certificate(
    service: Service, maker: Manufacturer
) -> None:
    with service.admin() as admin:
        make_org(admin, "acme")
        client = make_client(admin, "acme", scopes=["openid", "devices"], audience=HUB)
    shown = enroll(
        service,
        maker,
        "hubbed",
        {
            "name": "plgd.dps",
            "clientId": client["client_id"],  # the seed's camelCase keys
            "clientSecret": client["client_secret"],
            "scopes": ["devices"],
        },
    )
    assert shown["hub"] == {
        "authorization": {
            "provider": {
                "name": "plgd.dps",
                "client_id": client["client_id"],
                "has_client_secret": True,
                "scopes": ["devices"],
                "audience": None,
                "token_url": None,
            }
        }
    }
    with service.admin() as admin:
        again = admin.get("/api/v1/enrollments/hubbed")
    assert client["client_secret"] not in again.text
    assert client["client_secret"] not in json.dumps(shown)

    # Two signed requests for one CSR: the second is a retry of the first.
    leaf, device_key = maker.line.idevid("sensor-1")
    csr, csr_pem = make_csr()
    bodies = [
        {
            "mechanism": "x509",
            "csr": csr_pem,
            "evidence": {
                "jws": sign_compact(
                    provision_payload(csr, f"{service.base_url}/api/v1/provision"),
                    device_key,
                    [leaf, maker.line.certificate],
                )
            },
        }
        for _ in range(2)
    ]
    with service.client() as http:
        first = http.post("/api/v1/provision", json=bodies[0])
        service.clock.advance(timedelta(seconds=1))  # a later iat: a fresh token shows it
        second = http.post("/api/v1/provision", json=bodies[1])
    assert first.status_code == 200, first.text
    assert second.status_code == 200, second.text
    one, two = first.json()["bundle"], second.json()["bundle"]
    assert one["owner"] == "acme"
    assert one["pre_shared_key"] == "0123456789012345"
    assert two["serial"] == one["serial"]  # the retry gets the certificate already issued
    hub_one, hub_two = one["tokens"]["hub"], two["tokens"]["hub"]
    assert hub_one["token_type"] == "Bearer"
    assert hub_two["access_token"] != hub_one["access_token"]  # and a fresh token
    claims = verify(service, hub_one["access_token"], audience=HUB)  # PyJWT, our JWKS
    assert claims[OWNER_CLAIM] == "acme"
    assert claims["sub"] == client["client_id"]
    assert claims["scope"] == "devices"
    assert datetime.fromisoformat(hub_one["expires_at"]).timestamp() == claims["exp"]
    assert verify(service, hub_two["access_token"], audience=HUB)["iat"] > claims["iat"]
    # A hub token is for the hub: it does not open imprint's admin API.
    with service.client(headers={"Authorization": f"Bearer {hub_one['access_token']}"}) as http:
        assert http.get("/api/v1/orgs").status_code == 401


def test_wrong_secret_and_foreign_client_refuse_and_leave_nothing(
    service: Service, maker: Manufacturer
) -> None:
    with service.admin() as admin:
        make_org(admin, "acme")
        make_org(admin, "globex")
        ours = make_client(admin, "acme", audience=HUB)
        theirs = make_client(admin, "globex", audience=HUB)
        no_audience = make_client(admin, "acme")
    enroll(
        service,
        maker,
        "wrong-secret",
        {"name": "dps", "client_id": ours["client_id"], "client_secret": "not-the-secret"},
    )
    before = state(service)
    detail = refused(provision(service, maker, "sensor-2"), "hub_token_unavailable")
    assert "not-the-secret" not in detail
    assert state(service) == before
    assert service.runtime.devices.find("acme", "sensor-2") is None
    assert failed_steps(service, "hub_token_unavailable") == ["hub-token"]

    with service.admin() as admin:
        assert admin.delete("/api/v1/enrollments/wrong-secret").status_code == 204
    enroll(
        service,
        maker,
        "foreign-client",
        {"name": "dps", "client_id": theirs["client_id"], "client_secret": theirs["client_secret"]},
    )
    refused(provision(service, maker, "sensor-3"), "hub_token_owner_mismatch")
    assert state(service) == before

    with service.admin() as admin:
        assert admin.delete("/api/v1/enrollments/foreign-client").status_code == 204
    enroll(
        service,
        maker,
        "no-audience",
        {
            "name": "dps",
            "client_id": no_audience["client_id"],
            "client_secret": no_audience["client_secret"],
        },
    )
    detail = refused(provision(service, maker, "sensor-4"), "hub_token_unavailable")
    assert "audience" in detail
    assert state(service) == before


def test_enrollment_checks_its_hub_provider(service: Service, maker: Manufacturer) -> None:
    base = {
        "mechanism": "x509",
        "owner": "acme",
        "x509": {"certificate_chain": maker.chain()},
    }
    bad: dict[str, dict[str, Any]] = {
        "plain http elsewhere": {"token_url": "http://example.com/token"},
        "unknown key": {"authority": "https://auth.example.com"},
        "bad scope": {"scopes": ["has space"]},
    }
    with service.admin() as admin:
        ensure_org(admin, "acme")
        for reason, extra in bad.items():
            provider = {"name": "dps", "client_id": "c", "client_secret": "s", **extra}
            answer = admin.post(
                "/api/v1/enrollments",
                json={**base, "hub": {"authorization": {"provider": provider}}},
            )
            assert answer.status_code == 400, reason
            assert answer.headers["content-type"] == PROBLEM, reason
        listed = admin.get("/api/v1/enrollments").json()["items"]
    assert listed == []


# --- an external token endpoint, served by a real local HTTP server --------------------


class _TokenServer:
    """A client-credentials token endpoint: Basic auth, form body, JWT answers."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.owner: object = "acme"
        self.opaque = False
        self.requests: list[dict[str, Any]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/oauth/token"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                scheme, _, value = self.headers.get("Authorization", "").partition(" ")
                user, _, password = base64.b64decode(value).decode().partition(":")
                endpoint.requests.append({"form": form, "user": user})
                if scheme != "Basic" or (user, password) != ("hub-client", "hub-secret"):
                    self._send(401, {"error": "invalid_client", "error_description": password})
                    return
                now = int(time.time())
                claims = {"iss": "http://idp", "sub": user, "aud": HUB, "iat": now}
                claims["exp"] = now + 600
                if endpoint.owner is not None:
                    claims[OWNER_CLAIM] = endpoint.owner
                token = jwt.encode(claims, endpoint.key, algorithm="RS256")
                if endpoint.opaque:
                    token = "opaque-token-123"
                self._send(200, {"access_token": token, "token_type": "bearer", "expires_in": 600})

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def endpoint() -> Iterator[_TokenServer]:
    made = _TokenServer()
    with serving(made.server):
        yield made


def test_external_provider_token_is_checked_for_the_owner(
    service: Service, maker: Manufacturer, endpoint: _TokenServer
) -> None:
    provider = {
        "name": "external",
        "client_id": "hub-client",
        "client_secret": "hub-secret",
        "scopes": ["openid", "devices"],
        "audience": HUB,
        "token_url": endpoint.url,
    }
    enroll(service, maker, "external", provider)
    answer = provision(service, maker, "sensor-5")
    assert answer.status_code == 200, answer.text
    hub = answer.json()["bundle"]["tokens"]["hub"]
    assert endpoint.requests[-1] == {
        "form": {"grant_type": "client_credentials", "scope": "openid devices", "audience": HUB},
        "user": "hub-client",
    }
    claims = jwt.decode(
        hub["access_token"], endpoint.key.public_key(), algorithms=["RS256"], audience=HUB
    )
    assert claims[OWNER_CLAIM] == "acme"
    assert hub["token_type"] == "bearer"
    assert datetime.fromisoformat(hub["expires_at"]).timestamp() == claims["exp"]

    before = state(service)
    for owner, code in ((None, "hub_token_owner_mismatch"), ("globex", "hub_token_owner_mismatch")):
        endpoint.owner = owner
        refused(provision(service, maker, f"sensor-{owner}"), code)
    endpoint.owner, endpoint.opaque = "acme", True
    detail = refused(provision(service, maker, "sensor-opaque"), "hub_token_unavailable")
    assert "not a JWT" in detail
    assert state(service) == before


def test_external_provider_refusing_or_gone_is_a_clean_502(
    service: Service, maker: Manufacturer, endpoint: _TokenServer
) -> None:
    provider = {
        "name": "external",
        "client_id": "hub-client",
        "client_secret": "wrong-secret",
        "token_url": endpoint.url,
    }
    enroll(service, maker, "refusing", provider)
    before = state(service)
    detail = refused(provision(service, maker, "sensor-6"), "hub_token_unavailable")
    assert "HTTP 401, invalid_client" in detail
    assert "wrong-secret" not in detail  # the endpoint echoed it; we do not
    endpoint.server.shutdown()
    endpoint.server.server_close()
    detail = refused(provision(service, maker, "sensor-7"), "hub_token_unavailable")
    assert "cannot be reached" in detail
    assert state(service) == before


def test_registration_key_devices_get_the_token_sealed(service: Service) -> None:
    with service.admin() as admin:
        make_org(admin, "flanders")
        client = make_client(admin, "flanders", audience=HUB)
        key = enrollment_with_key(
            admin,
            "sealed-hub",
            "flanders",
            hub={
                "authorization": {
                    "provider": {
                        "name": "dps",
                        "client_id": client["client_id"],
                        "client_secret": client["client_secret"],
                    }
                }
            },
        )
    first, second = key.split("-")
    with service.client() as http:
        answer = provision_with_key(http, "7000001", first)
    assert answer.status_code == 200, answer.text
    bundle = answer.json()["bundle"]
    assert bundle["tokens"] == {}  # only sealed, for the holder of the key
    opened = open_for_device(second.encode("ascii"), "7000001", bundle["sealed"])
    token = opened["tokens"]["hub"]["access_token"]
    assert token not in answer.text
    assert verify(service, token, audience=HUB)[OWNER_CLAIM] == "flanders"
