"""The browser relay end to end: a client posts its CSR, a user approves it on the HTML
page with a real HTTP client that keeps cookies and submits the form as a browser
would (CSRF token included), and the client collects the chain with its state."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from sqlalchemy import func, select

from imprint.settings import IdentitySettings, Settings
from imprint.store.tables import relay_requests
from tests.integration.conftest import Service, start_service
from tests.integration.identity_helpers import (
    certificate_count,
    common_name_of,
    csr_pem,
    make_csr,
    openssl_verify,
    user_token,
)
from tests.integration.oauth_helpers import PASSWORD, bearer, make_org, make_user

START = "/api/v1/relay"


class _Form(HTMLParser):
    """The first form of a page: its action and its inputs' values."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self.texts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form" and self.action is None:
            self.action = values.get("action")
        if tag == "input" and "name" in values:
            self.fields[values["name"]] = values.get("value", "")

    def handle_data(self, data: str) -> None:
        self.texts.append(data)


def form_of(page: httpx.Response) -> _Form:
    parser = _Form()
    parser.feed(page.text)
    assert parser.action is not None, page.text
    return parser


def start_relay(service: Service, csr: x509.CertificateSigningRequest) -> dict[str, object]:
    with service.client() as http:
        answer = http.post(START, json={"csr": csr_pem(csr)})
    assert answer.status_code == 201, answer.text
    started: dict[str, object] = answer.json()
    return started


def collect(service: Service, state: object) -> httpx.Response:
    with service.client() as http:
        return http.get(f"{START}/{state}")


def audit_entries(service: Service, action: str) -> list[dict[str, object]]:
    """The audit log's entries of ``action``, oldest first, as an admin reads them."""
    with service.admin() as admin:
        answer = admin.get("/api/v1/audit", params={"action": action, "limit": 100})
    assert answer.status_code == 200, answer.text
    items: list[dict[str, object]] = answer.json()["items"]
    return items[::-1]


def member(service: Service, username: str, org_id: str, role: str = "operator") -> None:
    with service.admin() as admin:
        make_org(admin, org_id)
        make_user(admin, username, org_id, role)


@pytest.mark.slow
@pytest.mark.both_databases
def test_a_user_approves_in_the_browser_and_the_client_collects(service: Service) -> None:
    member(service, "marge@simps.net", "acme")
    key, csr = make_csr("d2d-client-on-a-server")
    started = start_relay(service, csr)
    assert started["expires_in"] == 60
    assert len(str(started["state"])) >= 22  # at least 128 bits, base64url
    assert started["approve_url"] == f"{service.base_url}/relay/{started['state']}"
    pending = collect(service, started["state"])
    assert pending.status_code == 202
    assert pending.headers["retry-after"] == "1"
    assert pending.json()["status"] == "pending"

    with service.client() as browser:  # keeps cookies like a browser
        page = browser.get(str(started["approve_url"]))
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["x-frame-options"] == "DENY"
        assert str(started["fingerprint"]) in page.text
        assert "CN=d2d-client-on-a-server" in page.text
        assert browser.cookies.get("__Host-imprint-csrf")
        form = form_of(page)
        assert set(form.fields) >= {"csrf", "username", "password"}
        done = browser.post(
            form.action or "",
            data={
                **form.fields,
                "username": "marge@simps.net",
                "password": PASSWORD,
                "decision": "approve",
            },
        )
    assert done.status_code == 200, done.text
    assert "Approved" in done.text

    answer = collect(service, started["state"])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "approved"
    assert body["owner"] == "acme"
    certificate = x509.load_pem_x509_certificate(body["certificate"].encode())
    assert common_name_of(certificate) == "acme"
    assert certificate.public_key() == key.public_key()  # the client's own key
    openssl_verify(service.workdir, body["certificate_chain"], body["trust_anchors"])
    again = collect(service, started["state"])  # single use
    assert again.status_code == 404
    assert again.json()["code"] == "relay_unknown"
    with service.client() as browser:
        assert browser.get(str(started["approve_url"])).status_code == 404


def test_the_form_needs_its_csrf_token_and_cookie(service: Service) -> None:
    member(service, "marge@simps.net", "acme")
    _, csr = make_csr()
    started = start_relay(service, csr)
    other = start_relay(service, make_csr()[1])
    login = {"username": "marge@simps.net", "password": PASSWORD, "decision": "approve"}
    with service.client() as browser:
        form = form_of(browser.get(str(started["approve_url"])))
        other_form = form_of(browser.get(str(other["approve_url"])))
        cookie = browser.cookies.get("__Host-imprint-csrf")
    attempts = [
        ({**form.fields, **login}, {}),  # no cookie (a cross-site post)
        ({**form.fields, **login, "csrf": "0" * 64}, {"__Host-imprint-csrf": cookie}),
        ({**other_form.fields, **login}, {"__Host-imprint-csrf": cookie}),  # another state's
    ]
    before = certificate_count(service)
    for data, cookies in attempts:
        with service.client(cookies=cookies) as browser:
            refused = browser.post(form.action or "", data=data)
        assert refused.status_code == 403, refused.text
        assert "Form refused" in refused.text
    assert collect(service, started["state"]).status_code == 202  # still pending
    assert certificate_count(service) == before


@pytest.mark.slow
def test_wrong_password_leaves_the_request_pending(service: Service) -> None:
    member(service, "marge@simps.net", "acme")
    started = start_relay(service, make_csr()[1])
    with service.client() as browser:
        form = form_of(browser.get(str(started["approve_url"])))
        wrong = browser.post(
            form.action or "",
            data={**form.fields, "username": "marge@simps.net", "password": "nope"},
        )
    assert wrong.status_code == 401
    assert "Wrong user name or password" in wrong.text
    assert collect(service, started["state"]).status_code == 202


@pytest.mark.slow
def test_a_denied_request_tells_the_client_once(service: Service) -> None:
    member(service, "marge@simps.net", "acme")
    started = start_relay(service, make_csr()[1])
    before = certificate_count(service)
    with service.client() as browser:
        form = form_of(browser.get(str(started["approve_url"])))
        denied = browser.post(
            form.action or "",
            data={
                **form.fields,
                "username": "marge@simps.net",
                "password": PASSWORD,
                "decision": "deny",
            },
        )
    assert denied.status_code == 200
    answer = collect(service, started["state"])
    assert answer.status_code == 403
    assert answer.json()["code"] == "relay_denied"
    assert collect(service, started["state"]).status_code == 404
    assert certificate_count(service) == before
    # The client's start and its collect are in the audit log, named by its key.
    actor = f"relay:{str(started['public_key_sha256'])[:16]}"
    [begun] = audit_entries(service, "relay.start")
    assert (begun["actor"], begun["target_id"]) == (actor, started["public_key_sha256"])
    assert [e["actor"] for e in audit_entries(service, "relay.deny")] == ["user:marge@simps.net"]
    [collected] = audit_entries(service, "relay.collect")  # the 404 collect wrote nothing
    assert (collected["actor"], collected["target_id"]) == (actor, started["public_key_sha256"])
    assert collected["details"] == {"status": "denied"}


@pytest.mark.slow
def test_a_signed_in_user_approves_with_her_bearer_token(service: Service) -> None:
    token = user_token(service, "marge@simps.net", "acme")
    started = start_relay(service, make_csr()[1])
    with bearer(service, token) as browser:
        page = browser.get(str(started["approve_url"]))
        assert "Signed in as" in page.text
        form = form_of(page)
        assert "password" not in form.fields
        done = browser.post(form.action or "", data={**form.fields, "decision": "approve"})
    assert done.status_code == 200, done.text
    collected = collect(service, started["state"]).json()
    assert collected["owner"] == "acme"
    [entry] = audit_entries(service, "relay.collect")
    assert entry["actor"] == f"relay:{str(started['public_key_sha256'])[:16]}"
    assert (entry["target_type"], entry["target_id"]) == ("certificate", collected["serial"])
    assert entry["org_id"] == "acme"


@pytest.mark.slow
def test_a_viewer_or_a_second_key_cannot_approve(service: Service) -> None:
    member(service, "marge@simps.net", "acme")
    with service.admin() as admin:
        make_user(admin, "bart@simps.net", "acme", "viewer")
    token = user_token(service, "lisa@simps.net", "acme")
    with bearer(service, token) as http:
        held = http.post("/api/v1/sign/identity-csr", json={"csr": csr_pem(make_csr()[1])})
    assert held.status_code == 200
    started = start_relay(service, make_csr()[1])
    before = certificate_count(service)
    for username, status, text in (
        ("bart@simps.net", 403, "viewer"),
        ("marge@simps.net", 409, "another key"),
    ):
        with service.client() as browser:
            form = form_of(browser.get(str(started["approve_url"])))
            refused = browser.post(
                form.action or "",
                data={
                    **form.fields,
                    "username": username,
                    "password": PASSWORD,
                    "decision": "approve",
                },
            )
        assert refused.status_code == status, refused.text
        assert text in refused.text
    assert collect(service, started["state"]).status_code == 202
    assert certificate_count(service) == before


@pytest.mark.slow
def test_bad_requests_and_unknown_states(service: Service) -> None:
    with service.client() as http:
        for request, code in (
            ({"json": {"csr": "garbage"}}, "csr_invalid"),
            ({"content": b"x", "headers": {"Content-Type": "text/plain"}}, "value_invalid"),
        ):
            answer = http.post(START, **request)
            assert answer.status_code == 400
            assert answer.json()["code"] == code
        for state in ("A" * 32, "short", "a" * 300, "not%20a%20state"):
            unknown = http.get(f"{START}/{state}")
            assert unknown.status_code == 404
            assert unknown.json()["code"] == "relay_unknown"
            assert http.get(f"/relay/{state}").status_code == 404
    with service.runtime.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(relay_requests)).scalar() == 0


@pytest.fixture
def short_lived(settings: Settings, tmp_path: Path) -> Iterator[Service]:
    """A server whose relay states live two seconds; three relays per minute per source."""
    quick = IdentitySettings(relay_lifetime_seconds=2, relay_requests_per_minute=3)
    yield from start_service(settings.model_copy(update={"identities": quick}), tmp_path)


@pytest.mark.slow
def test_states_expire_and_sources_are_rate_limited(short_lived: Service) -> None:
    service = short_lived
    member(service, "marge@simps.net", "acme")
    started = start_relay(service, make_csr()[1])
    assert started["expires_in"] == 2
    expires_at = datetime.fromisoformat(str(started["expires_at"]))
    with service.client() as browser:
        form = form_of(browser.get(str(started["approve_url"])))
        service.clock.advance(expires_at - service.clock.now() + timedelta(milliseconds=1))
        late = browser.post(
            form.action or "",
            data={
                **form.fields,
                "username": "marge@simps.net",
                "password": PASSWORD,
                "decision": "approve",
            },
        )
        assert late.status_code == 410
        assert browser.get(str(started["approve_url"])).status_code == 410
    expired = collect(service, started["state"])
    assert expired.status_code == 410
    assert expired.json()["code"] == "relay_expired"
    assert certificate_count(service) == 1  # only the server's own certificate
    assert audit_entries(service, "relay.collect") == []  # an expired collect changes nothing
    start_relay(service, make_csr()[1])
    start_relay(service, make_csr()[1])
    with service.client() as http:
        limited = http.post(START, json={"csr": csr_pem(make_csr()[1])})
    assert limited.status_code == 429
    assert "retry-after" in limited.headers
    assert len(audit_entries(service, "relay.start")) == 3  # the refused one wrote nothing
    # Expired requests are purged, and audited, when a new one starts ten minutes later.
    assert audit_entries(service, "relay.purge") == []
    service.clock.advance(timedelta(minutes=11))
    start_relay(service, make_csr()[1])
    [purge] = audit_entries(service, "relay.purge")
    assert (purge["actor"], purge["details"]) == ("system:expiry", {"purged": 3})
    assert collect(service, started["state"]).status_code == 404  # gone for good


def test_the_page_escapes_what_the_client_sent(service: Service) -> None:
    started = start_relay(service, make_csr('<script>alert("x")</script>')[1])
    with service.client() as browser:
        page = browser.get(str(started["approve_url"]))
    assert page.status_code == 200
    assert "<script>" not in page.text
    assert "CN=\\&lt;script\\&gt;alert(" in page.text  # RFC 4514, then HTML escaping
    assert "default-src 'none'" in page.headers["content-security-policy"]
