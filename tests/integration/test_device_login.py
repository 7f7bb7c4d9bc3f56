"""``imprint login --device`` (OAuth 2.0 Device Authorization Grant, RFC 8628) against a
real HTTPS server: the command line shows a code, a user signed in to the console
approves or denies it, and the command line ends logged in as her (or refused). The
token endpoint answers ``authorization_pending``, ``slow_down``, ``expired_token`` and
``access_denied`` as the RFC says, and a device code gives one token at most."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from imprint.audit import AuditQuery
from imprint.auth.clients import DEVICE_CODE
from imprint.settings import Settings
from imprint.tenancy.access import cli_principal
from imprint.tenancy.roles import Role
from tests.integration.conftest import Service, start_service
from tests.integration.fleet_helpers import Cli, pending_device

PASSWORD = "correct horse battery"
USER = "marge@acme.test"
_CODE = re.compile(r"\b([B-DF-HJ-NP-TV-XZ]{4}-[B-DF-HJ-NP-TV-XZ]{4})\b")


@pytest.fixture
def remote(settings: Settings, tmp_path: Path) -> Iterator[Service]:
    auth = settings.auth.model_copy(update={"device_poll_interval_seconds": 1})
    yield from start_service(settings.model_copy(update={"auth": auth}), tmp_path / "server")


def _people(service: Service) -> None:
    app = service.runtime.app
    app.organizations.create(cli_principal(), "Acme", org_id="acme")
    app.users.create(cli_principal(), USER, PASSWORD, org_id="acme", role=Role.ADMIN)


def _console(service: Service) -> httpx.Client:
    """A browser signed in to the console as the user."""
    browser = service.client(follow_redirects=False)
    page = browser.get("/console/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf, page.text
    answer = browser.post(
        "/console/login",
        data={"csrf": csrf[1], "username": USER, "password": PASSWORD, "next": "/console/"},
    )
    assert answer.status_code == 303, answer.text
    return browser


def _decide(browser: httpx.Client, code: str, decision: str) -> httpx.Response:
    """Open the page with the code, then press Approve or Deny on its form."""
    page = browser.get("/console/device", params={"code": code})
    assert page.status_code == 200, page.text
    letters = re.sub("[^A-Z]", "", code.upper())
    assert f"{letters[:4]}-{letters[4:]}" in page.text  # shown as the command line shows it
    assert "imprint command line" in page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    return browser.post(
        "/console/device", data={"csrf": csrf[1], "code": code, "decision": decision}
    )


def _code_of(process: subprocess.Popen[str]) -> tuple[str, str]:
    """The user code and the page address the command line printed."""
    assert process.stderr is not None
    seen = ""
    while True:
        line = process.stderr.readline()
        assert line, f"imprint ended without a code: {seen}"
        seen += line
        found = _CODE.search(line)
        if found:
            address = re.search(r"open (https://\S+/console/device) ", seen)
            assert address, seen
            return found[1], address[1]


def _finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    _out, rest = process.communicate(timeout=120)
    return process.returncode, rest


@pytest.mark.slow
def test_a_user_approves_the_command_line_in_the_console(
    remote: Service, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    _people(remote)
    pending_device(remote, "acme", "pump-17")
    cli = Cli(tmp_path / "person")
    server = ["--server", remote.base_url, "--ca-file", str(remote.root_cert)]
    browser = _console(remote)
    request.addfinalizer(browser.close)

    # Approved: the command line ends logged in as her, and acts as her.
    login = cli.start("login", *server, "--device")
    code, address = _code_of(login)
    assert address == f"{remote.base_url}/console/device"
    forged = browser.post("/console/device", data={"code": code, "decision": "approve"})
    assert forged.status_code == 403  # no CSRF token: refused, nothing decided
    approved = _decide(browser, code, "approve")
    assert approved.status_code == 200
    assert "Approved" in approved.text
    status, said = _finish(login)
    assert status == 0, said
    assert f"as user {USER}" in said
    listed = cli.json("devices", "list")
    assert [d["device_id"] for d in listed["items"]] == ["pump-17"]
    profiles = cli.json("profile", "list")["items"]
    assert [(p["name"], p["kind"], p["username"]) for p in profiles] == [("default", "user", USER)]
    made = cli.json("org", "create", "Acme Lab", "--id", "acme-lab", "--parent", "acme")
    assert made["id"] == "acme-lab"
    audit = remote.runtime.audit
    approvals = audit.search(AuditQuery(action="device_login.approve"))
    assert [(e.actor, e.org_id, e.details["client_id"]) for e in approvals] == [
        (f"user:{USER}", "acme", "imprint-cli")
    ]
    created = audit.search(AuditQuery(action="org.create", target_id="acme-lab"))
    assert [e.actor for e in created] == [f"user:{USER}"]
    # The code is used: typing it again finds nothing to approve.
    again = browser.get("/console/device", params={"code": code})
    assert again.status_code == 404
    assert "mistyped, expired or used" in again.text

    # Denied: the command line says so, exits 1 and saves no profile.
    refused = cli.start("login", *server, "--device", "--profile", "other")
    code, _ = _code_of(refused)
    denied = _decide(browser, code.lower().replace("-", ""), "deny")  # as typed, loosely
    assert "Denied" in denied.text
    status, said = _finish(refused)
    assert status == 1
    assert "the sign-in was denied" in said
    assert [p["name"] for p in cli.json("profile", "list")["items"]] == ["default"]
    denials = audit.search(AuditQuery(action="device_login.deny"))
    assert [e.actor for e in denials] == [f"user:{USER}"]


def _token(http: httpx.Client, device_code: str) -> httpx.Response:
    return http.post(
        "/oauth/token",
        data={"grant_type": DEVICE_CODE, "client_id": "imprint-cli", "device_code": device_code},
    )


def _ask(http: httpx.Client) -> dict[str, Any]:
    answer = http.post("/oauth/device_authorization", data={"client_id": "imprint-cli"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    grant: dict[str, Any] = answer.json()
    return grant


@pytest.mark.both_databases
@pytest.mark.slow
def test_the_token_endpoint_answers_each_state_of_a_device_code(remote: Service) -> None:
    _people(remote)
    clock = remote.clock
    with closing(_console(remote)) as browser, remote.client() as http:
        discovery = http.get("/.well-known/openid-configuration").json()
        assert discovery["device_authorization_endpoint"].endswith("/oauth/device_authorization")
        assert DEVICE_CODE in discovery["grant_types_supported"]
        # Only a client given the grant may ask; a stranger is refused.
        stranger = http.post("/oauth/device_authorization", data={"client_id": "nobody"})
        assert stranger.json()["error"] == "invalid_client"

        grant = _ask(http)
        assert grant["interval"] == 1
        assert grant["expires_in"] == 600
        assert grant["verification_uri_complete"].endswith(grant["user_code"])
        # Too fast: the first poll waits, the one right after it is told to slow down.
        assert _token(http, grant["device_code"]).json()["error"] == "authorization_pending"
        slow = _token(http, grant["device_code"])
        assert (slow.status_code, slow.json()["error"]) == (400, "slow_down")
        clock.advance(timedelta(seconds=2))  # each slow_down adds 5 s: 6 s now
        assert _token(http, grant["device_code"]).json()["error"] == "slow_down"
        clock.advance(timedelta(seconds=12))  # 11 s now
        assert _token(http, grant["device_code"]).json()["error"] == "authorization_pending"

        # Approved: one token, then the device code is spent.
        assert _decide(browser, grant["user_code"], "approve").status_code == 200
        clock.advance(timedelta(seconds=12))
        issued = _token(http, grant["device_code"])
        assert issued.status_code == 200, issued.text
        assert issued.headers["cache-control"] == "no-store"
        token = issued.json()["access_token"]
        clock.advance(timedelta(seconds=12))
        reused = _token(http, grant["device_code"])
        assert (reused.status_code, reused.json()["error"]) == (400, "invalid_grant")
        me = http.get("/api/v1/whoami", headers={"Authorization": f"Bearer {token}"})
        assert (me.json()["kind"], me.json()["name"]) == ("user", USER)

        # Denied: access_denied.
        denied = _ask(http)
        _decide(browser, denied["user_code"], "deny")
        assert _token(http, denied["device_code"]).json()["error"] == "access_denied"

        # Expired: the code cannot be approved any more, and a poll hears expired_token.
        late = _ask(http)
        clock.advance(timedelta(seconds=601))
        page = browser.get("/console/device", params={"code": late["user_code"]})
        assert page.status_code == 404
        assert _token(http, late["device_code"]).json()["error"] == "expired_token"

        # A made-up device code, and one of another client, give nothing.
        assert _token(http, "x" * 43).json()["error"] == "invalid_grant"

    # The client's changes are audited with it as the actor: three codes asked for and
    # one spent for a token; the polls that changed no login's state wrote nothing.
    audit = remote.runtime.audit
    client = "client:imprint-cli"
    started = audit.search(AuditQuery(action="device_login.start"))
    assert [(e.actor, e.target_id) for e in started] == [(client, "imprint-cli")] * 3
    [completed] = audit.search(AuditQuery(action="device_login.complete"))
    user = remote.runtime.users.find_by_username(USER)
    assert user is not None
    assert (completed.actor, completed.target_id, completed.org_id, completed.outcome) == (
        client,
        user.id,
        "acme",
        "success",
    )
    assert len(audit.search(AuditQuery(actor=client))) == 4


def test_a_code_approved_for_a_user_disabled_since_is_spent_and_audited(
    remote: Service,
) -> None:
    _people(remote)
    with closing(_console(remote)) as browser, remote.client() as http:
        grant = _ask(http)
        assert _decide(browser, grant["user_code"], "approve").status_code == 200
    user = remote.runtime.users.find_by_username(USER)
    assert user is not None
    remote.runtime.app.users.disable(cli_principal(), user.id)
    with remote.client() as http:
        refused = _token(http, grant["device_code"])
        assert (refused.status_code, refused.json()["error"]) == (400, "invalid_grant")
        assert "disabled" in refused.json()["error_description"]
        remote.runtime.app.users.enable(cli_principal(), user.id)
        remote.clock.advance(timedelta(seconds=2))
        again = _token(http, grant["device_code"])  # spent: enabling her gives nothing
        assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")
    [failed] = remote.runtime.audit.search(AuditQuery(action="device_login.complete"))
    assert (failed.actor, failed.target_id, failed.outcome) == (
        "client:imprint-cli",
        user.id,
        "failure",
    )
    assert failed.details["reason"] == "the user is disabled"
