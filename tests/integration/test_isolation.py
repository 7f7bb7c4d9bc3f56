"""The isolation matrix over real HTTPS, on SQLite and PostgreSQL.

Four organizations: ``a`` with its child ``a-kid``, and ``b`` with its child ``b-kid``,
each holding one of every kind of admin object, made through the API as an operator
would. Alice, a signed-in user with the admin role in ``a``, must:

* get 404 for the objects of ``b`` and ``b-kid`` on every admin endpoint, with the same
  answer as for an id nobody uses, and change nothing there;
* see (and act on) the objects of ``a-kid``;
* find only ``a``'s and ``a-kid``'s objects in every list.

Viewers and operators of ``a`` get 403 ``role_insufficient`` for what their role does
not allow, and instance-wide objects (deny-list, manufacturer CRLs, certificates of any
name, the audit log's hash chain) are for API keys only.

Every route of the application is classified below: a new route with no case here
makes :func:`test_every_route_has_a_case` fail until someone decides how it is scoped.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy import select
from sqlalchemy.engine import Engine

from imprint.api.app import create_app
from imprint.store import db
from imprint.store.tables import certificates, devices
from tests.integration.conftest import Service
from tests.integration.identity_helpers import sign_in, sign_in_client
from tests.integration.oauth_helpers import (
    PASSWORD,
    bearer,
    make_client,
    make_org,
    make_user,
    token_for,
)
from tests.integration.test_oob_secret import request_body

PROBLEM = "application/problem+json"
SECRET = "s3cret-from-the-label"
MINE, KID, FOREIGN = "a", "a-kid", ("b", "b-kid")
ORGS = (MINE, KID, *FOREIGN)
MISSING = "zz-missing"  # an organization nobody made: its object ids exist nowhere
RANK = {"viewer": 1, "operator": 2, "admin": 3, "instance": 4}

Objects = dict[str, Any]


@dataclass(frozen=True)
class Call:
    method: str
    url: str
    json: Any = None
    params: dict[str, str] = field(default_factory=dict)

    def send(self, http: httpx.Client) -> httpx.Response:
        if self.json is None:
            return http.request(self.method, self.url, params=self.params)
        return http.request(self.method, self.url, params=self.params, json=self.json)


@dataclass(frozen=True)
class Case:
    """One admin route: the least role it needs, which of an organization's objects it
    is called on, and what success looks like."""

    method: str
    path: str
    role: str
    ok: int = 200
    use: dict[str, str] = field(default_factory=dict)  # path parameter -> object key
    body: Callable[[Objects], Any] | None = None
    query: Callable[[Objects], dict[str, str]] | None = None

    def call(self, o: Objects) -> Call:
        """The request on ``o``'s object: path parameters filled from ``o``."""
        keys = {**PARAMETERS, **self.use}
        url = re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: str(o[keys[m.group(1)]]), self.path)
        body = None if self.body is None else self.body(o)
        return Call(self.method, url, body, {} if self.query is None else self.query(o))


# Which object a path parameter names unless a case says otherwise (keys of Objects).
PARAMETERS = {
    "enrollment_id": "oob",
    "device_ref": "dev",
    "device_id": "new_secret",
    "serial": "serial2",
    "channel_id": "channel",
    "kind": "kind",
    "psk_id": "psk",
    "client_id": "client",
    "user_id": "user",
    "org_id": "org",
    "fingerprint_sha256": "ca_fp",
    "webhook_id": "webhook",
}


def ca_pem(name: str) -> tuple[str, str]:
    """A self-signed CA certificate (PEM) and its SHA-256 fingerprint."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    return pem, certificate.fingerprint(hashes.SHA256()).hex()


# --- every admin route, in the order the positive sweep runs them ---------------------

E = "/api/v1/enrollments/{enrollment_id}"
D = "/api/v1/devices/{device_ref}"
W = "/api/v1/webhooks/{webhook_id}"
HOOK = "/api/v1/provisioning-hooks/{org_id}"
# Webhooks of the matrix want only certificate.expiring (never sent here), and its
# hooks are disabled: nothing is delivered to their example.com URLs.
QUIET = ["certificate.expiring"]
CASES: list[Case] = [
    # reads
    Case("GET", E, "viewer"),
    Case("GET", E + "/registration-key", "viewer", use={"enrollment_id": "rk"}),
    Case("GET", E + "/oob-secrets", "viewer"),
    Case("GET", E + "/client-cas", "viewer", use={"enrollment_id": "ca"}),
    Case("GET", D, "viewer"),
    Case("GET", "/api/v1/certificates/{serial}", "viewer"),
    Case("GET", "/api/v1/channels/{channel_id}", "viewer"),
    Case("GET", "/api/v1/psk/{psk_id}", "viewer"),
    Case("GET", "/api/v1/oauth-clients/{client_id}", "viewer"),
    Case("GET", "/api/v1/users/{user_id}", "viewer"),
    Case("GET", "/api/v1/orgs/{org_id}", "viewer"),
    Case("GET", "/api/v1/audit", "admin", query=lambda o: {"org": o["org"]}),
    Case("GET", W, "viewer"),
    Case("GET", W + "/deliveries", "viewer"),
    Case("GET", HOOK, "viewer"),
    Case("GET", "/api/v1/webhook-deliveries", "viewer", query=lambda o: {"org": o["org"]}),
    # enrollments and their keys
    Case(
        "POST",
        "/api/v1/enrollments",
        "admin",
        201,
        body=lambda o: {"id": f"new-{o['org']}", "mechanism": "oob-secret", "owner": o["org"]},
    ),
    Case("POST", E + "/disable", "operator"),
    Case("POST", E + "/enable", "operator"),
    Case("POST", E + "/registration-key", "admin", 201, use={"enrollment_id": "rk"}),
    Case(
        "POST",
        E + "/oob-secrets",
        "operator",
        201,
        body=lambda o: {"device_id": o["new_secret"], "secret": SECRET},
    ),
    Case(
        "POST",
        E + "/oob-secrets:bulk",
        "operator",
        body=lambda o: [{"device_id": f"bulk-{o['org']}", "secret": SECRET}],
    ),
    Case("DELETE", E + "/oob-secrets/{device_id:path}", "operator", 204),
    Case(
        "POST",
        E + "/one-time-passwords",
        "operator",
        201,
        body=lambda o: {"device_id": f"otp-{o['org']}"},
    ),
    Case(
        "POST",
        E + "/client-cas",
        "admin",
        201,
        use={"enrollment_id": "ca"},
        body=lambda o: {"pem": o["ca_new_pem"]},
    ),
    Case(
        "DELETE", E + "/client-cas/{fingerprint_sha256}", "admin", 204, use={"enrollment_id": "ca"}
    ),
    Case(
        "POST",
        "/idprov/oobsecret",
        "operator",
        body=lambda o: {"deviceID": f"idp-{o['org']}", "oobSecret": SECRET},
        query=lambda o: {"enrollment_id": o["oob"]},
    ),
    # devices, certificates, channels
    Case("POST", D + "/approve", "operator", use={"device_ref": "pending"}),
    Case("POST", D + "/disable", "operator"),
    Case("POST", D + "/enable", "operator"),
    Case("POST", D + "/revoke", "operator"),
    Case("POST", D + "/reset", "operator"),
    Case(
        "POST",
        "/api/v1/certificates/{serial}/revoke",
        "operator",
        body=lambda o: {"reason": "keyCompromise"},
    ),
    Case("POST", "/api/v1/channels/{channel_id}/keys/{kind}/regenerate", "operator"),
    Case("POST", "/api/v1/channels/{channel_id}/keys/read", "operator", 201),
    # organizations, users, machine clients, PSKs
    Case(
        "POST",
        "/api/v1/orgs",
        "admin",
        201,
        body=lambda o: {"id": f"sub-{o['org']}", "name": "Sub", "parent_id": o["org"]},
    ),
    Case(
        "POST",
        "/api/v1/users",
        "admin",
        201,
        body=lambda o: {
            "username": f"new@{o['org']}.test",
            "password": PASSWORD,
            "org_id": o["org"],
        },
    ),
    Case(
        "PUT",
        "/api/v1/users/{user_id}/roles/{org_id}",
        "admin",
        body=lambda o: {"role": "operator"},
    ),
    Case(
        "PUT",
        "/api/v1/users/{user_id}/password",
        "admin",
        204,
        body=lambda o: {"password": "a brand new passphrase"},
    ),
    Case("PATCH", "/api/v1/users/{user_id}", "admin", body=lambda o: {"disabled": True}),
    Case(
        "POST",
        "/api/v1/oauth-clients",
        "operator",
        201,
        body=lambda o: {"name": "bot", "org_id": o["org"], "role": "viewer"},
    ),
    Case("POST", "/api/v1/oauth-clients/{client_id}/rotate-secret", "operator"),
    Case("DELETE", "/api/v1/oauth-clients/{client_id}", "operator", 204),
    Case("POST", "/api/v1/psk", "operator", 201, body=lambda o: {"org_id": o["org"]}),
    Case("DELETE", "/api/v1/psk/{psk_id}", "operator", 204),
    Case("PATCH", "/api/v1/orgs/{org_id}", "admin", body=lambda o: {"name": "Renamed"}),
    # webhooks and the provisioning hook
    Case(
        "POST",
        "/api/v1/webhooks",
        "admin",
        201,
        body=lambda o: {"org_id": o["org"], "url": "https://hooks.example/new", "events": QUIET},
    ),
    Case("PATCH", W, "admin", body=lambda o: {"description": "changed"}),
    Case("POST", W + "/rotate-secret", "admin"),
    Case("PUT", HOOK, "admin", body=lambda o: {"url": "https://hooks.example/", "enabled": False}),
    # an organization that still holds objects is not deleted (409 for who may)
    Case("DELETE", "/api/v1/orgs/{org_id}", "admin", 409),
    # last: what takes objects away
    Case("DELETE", "/api/v1/users/{user_id}", "admin", 204, use={"user_id": "user2"}),
    Case("DELETE", "/api/v1/users/{user_id}/roles/{org_id}", "admin", 204),
    Case("POST", E + "/revoke", "operator", use={"enrollment_id": "rev"}),
    Case("PATCH", E, "admin", body=lambda o: {"quota": 7}),
    Case("DELETE", E, "admin", 204, use={"enrollment_id": "del"}),
    Case("DELETE", W, "admin", 204),
    Case("DELETE", HOOK, "admin", 204),
]

# A device unknown to the caller answers idprov's "Waiting", as idprov devices expect.
STATUS = Case("GET", "/idprov/status/{device_id}", "viewer", use={"device_id": "dev_id"})


# Lists: the field naming each item's organization.
LISTS: dict[str, tuple[str, str]] = {
    "/api/v1/enrollments": ("viewer", "owner"),
    "/api/v1/devices": ("viewer", "owner"),
    "/api/v1/certificates": ("viewer", "owner"),
    "/api/v1/channels": ("viewer", "owner"),
    "/api/v1/psk": ("viewer", "org_id"),
    "/api/v1/oauth-clients": ("viewer", "org_id"),
    "/api/v1/users": ("viewer", "memberships"),
    "/api/v1/orgs": ("viewer", "id"),
    "/api/v1/audit": ("admin", "org_id"),
    "/api/v1/webhooks": ("viewer", "org_id"),
}

# The whole instance's: an access token gets 403 instance_admin_required.
FP = "ab" * 32
INSTANCE: list[Call] = [
    Call("POST", "/api/v1/certificates", json={"csr": "x"}),
    Call("POST", "/api/v1/denied-certificates", json={"fingerprint_sha256": FP, "reason": "x"}),
    Call("GET", "/api/v1/denied-certificates"),
    Call("GET", f"/api/v1/denied-certificates/{FP}"),
    Call("DELETE", f"/api/v1/denied-certificates/{FP}"),
    Call("POST", "/api/v1/manufacturer-crls", json={"crl": "x"}),
    Call("GET", "/api/v1/manufacturer-crls"),
    Call("GET", f"/api/v1/manufacturer-crls/{FP}"),
    Call("DELETE", f"/api/v1/manufacturer-crls/{FP}"),
    Call("GET", "/api/v1/audit/verify"),
    Call("GET", "/api/v1/audit/export"),
    Call("POST", "/api/v1/imports/plgd-values", json={"values": "global: {}\n"}),
    Call("GET", "/api/v1/api-keys"),
    Call("POST", "/api/v1/api-keys", json={"name": "mine"}),
    Call("GET", "/api/v1/api-keys/admin"),
    Call("POST", "/api/v1/api-keys/admin/rotate"),
    Call("DELETE", "/api/v1/api-keys/admin"),
]
INSTANCE_ROUTES = {
    ("GET", "/api/v1/api-keys"),
    ("POST", "/api/v1/api-keys"),
    ("GET", "/api/v1/api-keys/{name}"),
    ("POST", "/api/v1/api-keys/{name}/rotate"),
    ("DELETE", "/api/v1/api-keys/{name}"),
    ("POST", "/api/v1/certificates"),
    ("POST", "/api/v1/denied-certificates"),
    ("GET", "/api/v1/denied-certificates"),
    ("GET", "/api/v1/denied-certificates/{fingerprint}"),
    ("DELETE", "/api/v1/denied-certificates/{fingerprint}"),
    ("POST", "/api/v1/manufacturer-crls"),
    ("GET", "/api/v1/manufacturer-crls"),
    ("GET", "/api/v1/manufacturer-crls/{issuer_key_sha256}"),
    ("DELETE", "/api/v1/manufacturer-crls/{issuer_key_sha256}"),
    ("GET", "/api/v1/audit/verify"),
    ("GET", "/api/v1/audit/export"),
    ("POST", "/api/v1/imports/plgd-values"),
}

# Admin credentials that touch no organization's object.
NO_OBJECT = {
    ("POST", "/api/v1/client-cas/decode"): "decodes the PEM it is given, stores nothing",
    ("GET", "/api/v1/whoami"): "shows the caller's own credentials",
    ("PUT", "/api/v1/users/me/password"): "changes the caller's own password",
    ("POST", "/api/v1/sign/identity-csr"): "signs only for the owner claim of the caller's token",
}

# Not the admin API: devices, the public, browsers and OAuth clients.
NOT_ADMIN = {
    ("GET", "/healthz"): "liveness",
    ("GET", "/readyz"): "readiness",
    ("GET", "/metrics"): "Prometheus metrics",
    ("GET", "/ca/{name}.crt"): "public CA certificates",
    ("GET", "/ca/{name}.pem"): "public CA certificates",
    ("GET", "/crl/{issuer}.{encoding}"): "public CRLs",
    ("POST", "/api/v1/provision"): "devices",
    **{
        (method, f"/.well-known/est{label}/{operation}"): "EST devices (RFC 7030)"
        for label in ("", "/{label}")
        for method, operation in (
            ("GET", "cacerts"),
            ("GET", "csrattrs"),
            ("POST", "simpleenroll"),
            ("POST", "simplereenroll"),
            ("POST", "serverkeygen"),
        )
    },
    ("POST", "/ocsp"): "OCSP clients (RFC 6960)",
    ("GET", "/ocsp/{encoded:path}"): "OCSP clients (RFC 5019)",
    ("POST", "/api/v1/renew"): "devices",
    ("GET", "/.well-known/imprint"): "the public directory",
    ("GET", "/api/v1/directory"): "the public directory",
    ("GET", "/idprov/directory"): "idprov devices",
    ("POST", "/idprov/provreq"): "idprov devices",
    ("GET", "/midpoint/ws/iot/devices/{serial}"): "midPoint devices",
    ("POST", "/midpoint/ws/iot/devices/{serial}"): "midPoint devices",
    ("POST", "/api:v1/stack/alias"): "devices writing data (client certificate)",
    ("GET", "/.well-known/openid-configuration"): "OpenID discovery",
    ("GET", "/.well-known/jwks.json"): "public keys",
    ("GET", "/oauth/jwks"): "public keys",
    ("POST", "/oauth/token"): "the token endpoint",
    ("POST", "/oauth/device_authorization"): "a device code for the command line's client",
    ("GET", "/oauth/authorize"): "the sign-in page",
    ("POST", "/oauth/authorize"): "the sign-in page",
    ("POST", "/api/v1/signup"): "self-registration",
    ("POST", "/api/v1/relay"): "a client posting its CSR",
    ("GET", "/api/v1/relay/{state}"): "a client collecting its certificate",
    ("GET", "/relay/{state}"): "the approval page (the user signs in there)",
    ("POST", "/relay/{state}"): "the approval page (the user signs in there)",
    ("GET", "/update"): "ThingSpeak writes with a channel key",
    ("POST", "/update"): "ThingSpeak writes with a channel key",
    ("GET", "/update.json"): "ThingSpeak writes with a channel key",
    ("POST", "/update.json"): "ThingSpeak writes with a channel key",
    **{
        ("GET", f"/channels/{{channel_id}}{tail}"): "ThingSpeak reads with a channel read key"
        for tail in (
            ".{fmt}",
            "/feeds",
            "/feeds.{fmt}",
            "/feeds/last.{fmt}",
            "/feeds/last_data_age.json",
            "/fields/{number}",
            "/fields/{number}.{fmt}",
            "/fields/{number}/last",
            "/fields/{number}/last.{fmt}",
            "/fields/{number}/last_data_age.json",
            "/status.json",
            "/charts/{number}",
        )
    },
}


def _routes(service: Service) -> set[tuple[str, str]]:
    """Every API route. The console's pages (``/console``) are left to the browser tests
    (tests/browser): they call these same route functions, scoping included."""
    app = create_app(service.runtime)
    return {
        (method, str(context.path))
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, APIRoute)
        and not str(context.path).startswith("/console")
        for method in context.methods or ()
    }


@pytest.mark.slow
def test_every_route_has_a_case(service: Service) -> None:
    covered = {(c.method, c.path) for c in CASES}
    assert len(covered) == len(CASES), "two cases for one route"
    covered |= {(STATUS.method, STATUS.path)}
    covered |= {("GET", path) for path in LISTS} | INSTANCE_ROUTES
    covered |= set(NO_OBJECT) | set(NOT_ADMIN)
    routes = _routes(service)
    unclassified = sorted(routes - covered)
    assert not unclassified, f"routes without an isolation case: {unclassified}"
    assert not sorted(covered - routes), "cases for routes that no longer exist"


# --- the world -----------------------------------------------------------------------


def _ok(answer: httpx.Response, status: int = 200) -> Any:
    assert answer.status_code == status, f"{answer.request.url}: {answer.text}"
    return answer.json() if answer.content else None


def _populate(service: Service, admin: httpx.Client, org: str) -> Objects:
    """One object of every kind in ``org``, made with the API key."""
    enrollment = "/api/v1/enrollments"
    channel = {"fields": {"field1": "temperature"}}
    specs: list[dict[str, Any]] = [
        {"id": f"oob-{org}", "mechanism": "oob-secret", "channel": channel},
        {"id": f"man-{org}", "mechanism": "oob-secret", "manual_approval": True},
        {"id": f"rk-{org}", "mechanism": "registration-key"},
        {"id": f"ca-{org}", "mechanism": "client-ca"},
        {"id": f"del-{org}", "mechanism": "oob-secret"},
        {"id": f"rev-{org}", "mechanism": "oob-secret"},
    ]
    for spec in specs:
        _ok(admin.post(enrollment, json={**spec, "owner": org}), 201)
    _ok(admin.post(f"{enrollment}/rk-{org}/registration-key"), 201)
    pem, fingerprint = ca_pem(f"CA of {org}")
    _ok(admin.post(f"{enrollment}/ca-{org}/client-cas", json={"pem": pem}), 201)
    serials: dict[str, str] = {}
    with service.client() as device:
        for enrollment_id, device_id, status in (
            (f"oob-{org}", f"dev-{org}", 200),
            (f"oob-{org}", f"dev2-{org}", 200),
            (f"man-{org}", f"pend-{org}", 202),
        ):
            secret = {"device_id": device_id, "secret": SECRET}
            _ok(admin.post(f"{enrollment}/{enrollment_id}/oob-secrets", json=secret), 201)
            body = request_body(SECRET, device_id, enrollment_id=enrollment_id)
            answer = _ok(device.post("/api/v1/provision", json=body), status)
            serials[device_id] = (answer.get("bundle") or {}).get("serial", "")
    refs = {
        d["device_id"]: d["id"]
        for d in _ok(admin.get("/api/v1/devices", params={"owner": org}))["items"]
    }
    channels = [c for c in _ok(admin.get("/api/v1/channels"))["items"] if c["owner"] == org]
    assert sorted(c["device_id"] for c in channels) == [f"dev-{org}", f"dev2-{org}"]
    channels = [c for c in channels if c["device_id"] == f"dev-{org}"]
    client = make_client(admin, org, "viewer")
    webhook = {"org_id": org, "url": f"https://hooks.example/{org}", "events": QUIET}
    hook = {"url": f"https://hooks.example/{org}", "enabled": False}
    _ok(admin.put(f"/api/v1/provisioning-hooks/{org}", json=hook))
    return {
        **_names(org),
        "dev": refs[f"dev-{org}"],
        "pending": refs[f"pend-{org}"],
        "serial": serials[f"dev-{org}"],
        "serial2": serials[f"dev2-{org}"],
        "channel": channels[0]["id"],
        "ca_fp": fingerprint,
        "ca_new_pem": ca_pem(f"Second CA of {org}")[0],
        "psk": _ok(admin.post("/api/v1/psk", json={"org_id": org}), 201)["id"],
        "client": client["client_id"],
        "user": make_user(admin, f"member@{org}.test", org, "viewer"),
        "user2": make_user(admin, f"second@{org}.test", org, "viewer"),
        "webhook": _ok(admin.post("/api/v1/webhooks", json=webhook), 201)["id"],
    }


def _names(org: str) -> Objects:
    """The ids that follow from the organization's."""
    prefixes = ("oob", "man", "rk", "ca", "del", "rev")
    named: Objects = {prefix: f"{prefix}-{org}" for prefix in prefixes}
    return {
        **named,
        "org": org,
        "dev_id": f"dev-{org}",
        "new_secret": f"new-{org}",
        "kind": "write",
    }


def _missing() -> Objects:
    """Ids of the same shapes that nothing has."""
    return {
        **_names(MISSING),
        "dev": str(uuid.uuid4()),
        "pending": str(uuid.uuid4()),
        "serial": "7" * 32,
        "serial2": "7" * 32,
        "channel": 2_000_000_000,
        "ca_fp": "cd" * 32,
        "ca_new_pem": ca_pem("Nobody's CA")[0],
        "psk": str(uuid.uuid4()),
        "client": "cli-000000000000",
        "user": "usr-0000000000000000",
        "user2": "usr-0000000000000001",
        "webhook": str(uuid.uuid4()),
    }


def _user_token(service: Service, admin: httpx.Client) -> str:
    """Alice signs in (authorization code with PKCE): admin of ``a``."""
    make_user(admin, "alice@a.test", MINE, "admin")
    token = sign_in(service, sign_in_client(admin, MINE), "alice@a.test", PASSWORD)
    assert token is not None
    return token


@dataclass
class World:
    objects: dict[str, Objects]
    alice: str


@pytest.fixture
def world(service: Service) -> World:
    with service.admin() as admin:
        make_org(admin, MINE)
        make_org(admin, KID, parent=MINE)
        make_org(admin, "b")
        make_org(admin, "b-kid", parent="b")
        objects = {org: _populate(service, admin, org) for org in ORGS}
        objects[MISSING] = _missing()
        alice = _user_token(service, admin)
    return World(objects, alice)


def _snapshot(service: Service, o: Objects) -> dict[str, Any]:
    """What the API key sees of an organization's objects."""
    org = o["org"]
    reads = [
        *(c.call(o).url for c in CASES if c.method == "GET" and c.path != "/api/v1/audit"),
        f"/api/v1/devices/{o['pending']}",
        f"/api/v1/certificates/{o['serial']}",
        f"/api/v1/enrollments/del-{org}",
        f"/api/v1/enrollments/rev-{org}",
        f"/api/v1/enrollments/new-{org}",
        f"/api/v1/orgs/sub-{org}",
    ]
    with service.admin() as admin:
        seen: dict[str, Any] = {url: admin.get(url).text for url in reads}
        for path, (_, key) in LISTS.items():
            items = admin.get(path, params={"limit": 1000}).json()["items"]
            seen[path] = [i for i in items if org in (i.get(key) or ())]
    return seen


def _anonymous(text: str, o: Objects) -> str:
    """The answer with the object's ids (longest first) and organization taken out."""
    skip = ("org", "ca_new_pem", "channel", "kind")
    values = sorted((str(v) for k, v in o.items() if k not in skip), key=len)
    for value in reversed(values):
        text = text.replace(value, "<id>")
    text = text.replace(f"channel {o['channel']}", "channel <id>")
    for prefix in ("new", "sub"):
        text = text.replace(f"{prefix}-{o['org']}", f"{prefix}-<org>")
    return text.replace(f"'{o['org']}'", "'<org>'").replace(f"new@{o['org']}", "new@<org>")


# --- the matrix ----------------------------------------------------------------------


@pytest.mark.slow
def test_a_member_of_a_gets_404_for_b_and_below_and_sees_a_kid(
    service: Service, world: World
) -> None:
    before = {org: _snapshot(service, world.objects[org]) for org in FOREIGN}
    with bearer(service, world.alice) as alice:
        missing = world.objects[MISSING]
        for case in CASES:
            nobody = case.call(missing).send(alice)
            assert nobody.status_code == 404, f"{case.method} {case.path}: {nobody.text}"
            assert nobody.headers["content-type"] == PROBLEM
            assert nobody.json()["code"] == "not_found"
            for org in FOREIGN:
                foreign = case.call(world.objects[org]).send(alice)
                where = f"{case.method} {case.path} on {org}"
                assert foreign.status_code == 404, f"{where}: {foreign.text}"
                assert foreign.headers["content-type"] == PROBLEM, where
                # exactly what an id nobody uses gets
                assert _anonymous(foreign.text, world.objects[org]) == _anonymous(
                    nobody.text, missing
                ), where
        waiting = STATUS.call(missing).send(alice)
        for org in FOREIGN:
            foreign = STATUS.call(world.objects[org]).send(alice)
            assert foreign.status_code == waiting.status_code == 200
            assert _anonymous(foreign.text, world.objects[org]) == _anonymous(waiting.text, missing)
            assert foreign.json()["status"] == "Waiting"
    assert {org: _snapshot(service, world.objects[org]) for org in FOREIGN} == before

    # A's own child: every read sees it and every action acts on it.
    kid = world.objects[KID]
    with bearer(service, world.alice) as alice:
        status = STATUS.call(kid).send(alice).json()
        assert status["status"] == "Approved"
        for case in CASES:
            answer = case.call(kid).send(alice)
            assert answer.status_code == case.ok, f"{case.method} {case.path}: {answer.text}"
    with service.admin() as admin:
        device = _ok(admin.get(f"/api/v1/devices/{kid['dev']}"))
        certificate = _ok(admin.get(f"/api/v1/certificates/{kid['serial2']}"))
        gone = admin.get(f"/api/v1/enrollments/del-{KID}")
    assert device["status"] == "reset"
    assert certificate["status"] == "revoked"
    assert gone.status_code == 404


@pytest.mark.slow
@pytest.mark.both_databases
def test_lists_hold_only_what_the_caller_sees(service: Service, world: World) -> None:
    visible = {MINE, KID}
    with bearer(service, world.alice) as alice:
        for path, (_, key) in LISTS.items():
            items = _ok(alice.get(path, params={"limit": 1000}))["items"]
            owners: set[str | None] = set()
            for item in items:
                value = item[key]
                owners |= set(value) if isinstance(value, dict) else {value}
            owners.discard(None)  # instance-wide audit entries
            assert KID in owners, f"{path} hides a-kid: {owners}"
            assert owners <= visible, f"{path} shows {owners - visible}"
        # a filter naming a foreign organization finds nothing, as for an unknown one
        for path in ("/api/v1/enrollments", "/api/v1/devices"):
            assert _ok(alice.get(path, params={"owner": "b"}))["items"] == []
        serials = {c["serial"] for c in _ok(alice.get("/api/v1/certificates"))["items"]}
    objects = world.objects
    assert {objects[o][k] for o in visible for k in ("serial", "serial2")} <= serials
    assert not {objects[o][k] for o in FOREIGN for k in ("serial", "serial2")} & serials
    with service.admin() as admin:  # the API key still sees the whole instance
        everything = {c["owner"] for c in _ok(admin.get("/api/v1/certificates"))["items"]}
    assert set(ORGS) <= everything
    assert None in everything  # the server's own certificate belongs to no organization


@pytest.mark.slow
@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_roles_limit_what_a_member_may_do(service: Service, world: World, role: str) -> None:
    with service.admin() as admin:
        token = token_for(service, admin, MINE, role)
    kid = world.objects[KID]
    before = _snapshot(service, kid)
    with bearer(service, token) as http:
        for case in CASES:
            if RANK[case.role] <= RANK[role] and case.method != "GET":
                continue  # allowed: the admin sweep acts; here nothing may change
            answer = case.call(kid).send(http)
            where = f"{role}: {case.method} {case.path}"
            if RANK[case.role] <= RANK[role]:
                assert answer.status_code == case.ok, f"{where}: {answer.text}"
            else:
                assert answer.status_code == 403, f"{where}: {answer.text}"
                assert answer.json()["code"] == "role_insufficient", where
    assert _snapshot(service, kid) == before


@pytest.mark.slow
def test_instance_wide_objects_need_an_api_key(service: Service, world: World) -> None:
    with bearer(service, world.alice) as alice:
        for call in INSTANCE:
            answer = call.send(alice)
            assert answer.status_code == 403, f"{call.method} {call.url}: {answer.text}"
            assert answer.headers["content-type"] == PROBLEM
            assert answer.json()["code"] == "instance_admin_required"
        pem = world.objects[KID]["ca_new_pem"]
        decoded = alice.post("/api/v1/client-cas/decode", json={"pem": pem})
        assert _ok(decoded)[0]["is_ca"] is True  # open to every caller: it stores nothing
    with service.admin() as admin:
        assert _ok(admin.get("/api/v1/denied-certificates"))["items"] == []
        denied = {"fingerprint_sha256": FP, "reason": "stolen"}
        assert _ok(admin.post("/api/v1/denied-certificates", json=denied), 201)


@pytest.mark.both_databases
def test_migration_gives_existing_certificates_their_device_owner(engine: Engine) -> None:
    """0009 fills in the owner of certificates that devices hold; others stay unowned."""
    from alembic import command

    with engine.begin() as connection:
        command.downgrade(db._alembic_config(connection), "0008")
    now = datetime.now(UTC).replace(microsecond=0)
    record = {
        "issuer": "ab",
        "profile": "device",
        "subject": "CN=x",
        "sans": "[]",
        "status": "issued",
        "not_before": now,
        "not_after": now + timedelta(days=1),
        "requested_by": "test",
        "created_at": now,
    }
    with engine.begin() as connection:
        for serial in ("aa01", "aa02"):  # the owner column does not exist yet
            connection.execute(certificates.insert().values(serial=serial, **record))
        connection.execute(
            devices.insert().values(
                id=str(uuid.uuid4()),
                owner="acme",
                device_id="d1",
                enrollment_id="e1",
                mechanism="oob-secret",
                status="provisioned",
                certificate_serial="aa01",
                created_at=now,
                updated_at=now,
            )
        )
    db.upgrade(engine)
    with engine.connect() as connection:
        owners = dict(connection.execute(select(certificates.c.serial, certificates.c.owner)).all())
    assert owners == {"aa01": "acme", "aa02": None}
