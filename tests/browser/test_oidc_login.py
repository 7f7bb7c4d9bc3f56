"""Signing in to the console through an external OpenID provider.

The provider is a second, real imprint: its own OAuth server (sign-in form,
authorization code with PKCE, ES256 tokens, JWKS, discovery) is a complete OpenID
provider. The console's imprint redeems the code over real TLS and verifies the token
against the provider's JWKS, exactly as it does for API calls.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imprint.audit import AuditQuery
from imprint.settings import OAuthClientSettings, Settings
from imprint.tenancy.orgs import create_organization
from imprint.tenancy.roles import Role
from imprint.tenancy.users import create_user
from tests.browser.conftest import PASSWORD, Problems
from tests.integration.conftest import Service, start_service

CLIENT_ID = "imprint-console"


@pytest.fixture
def federation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Service, Service]]:
    """(provider, console): two imprints; the console trusts the provider's tokens."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    console_url = f"https://127.0.0.1:{sock.getsockname()[1]}"
    (tmp_path / "provider").mkdir()
    (tmp_path / "console").mkdir()
    client = OAuthClientSettings(
        name="imprint console",
        clientID=CLIENT_ID,
        grantType="authorizationCode",
        scopes=["openid"],
        audience="imprint-console",
        redirectURL=f"{console_url}/console/login/oidc/callback",
    )
    provider_settings = Settings(
        data_dir=tmp_path / "provider" / "data",
        database={"url": f"sqlite:///{tmp_path}/provider/imprint.db"},
        ca={"passphrase": "provider-passphrase"},
        auth={"clients": [client]},
    )
    for provider in start_service(provider_settings, tmp_path / "provider"):
        now = provider.clock.now()
        create_organization(provider.runtime.orgs, "Acme", org_id="acme", at=now)
        create_user(
            provider.runtime.users,
            "carol@acme.example",
            PASSWORD,
            org_id="acme",
            role=Role.ADMIN,
            at=now,
        )
        monkeypatch.setenv("SSL_CERT_FILE", str(provider.root_cert))  # the console's urllib
        console_settings = Settings(
            data_dir=tmp_path / "console" / "data",
            database={"url": f"sqlite:///{tmp_path}/console/imprint.db"},
            ca={"passphrase": "console-passphrase"},
            server={"port": sock.getsockname()[1], "public_url": console_url},
            auth={
                "oidc": {
                    "issuer": provider.runtime.tokens.issuer,
                    "audience": "imprint-console",
                    "default_role": "operator",
                    "console_client_id": CLIENT_ID,
                }
            },
        )
        for console in start_service(console_settings, tmp_path / "console", sock=sock):
            create_organization(console.runtime.orgs, "Acme", org_id="acme", at=console.clock.now())
            yield provider, console


def test_sign_in_with_the_external_provider(
    page: Any, federation: tuple[Service, Service], problems: Problems
) -> None:
    provider, console = federation
    problems.expect("/favicon.ico")  # the provider's plain sign-in page has no icon
    page.goto(f"{console.base_url}/console/devices")
    issuer_host = provider.base_url.removeprefix("https://")
    page.get_by_role("link", name=f"Sign in with {issuer_host}").click()
    page.wait_for_url(f"{provider.base_url}/oauth/authorize?*")
    page.get_by_label("User name").fill("carol@acme.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{console.base_url}/console/devices")
    carol = provider.runtime.users.find_by_username("carol@acme.example")
    assert carol is not None
    # the access token names the user by her id at the provider (no preferred_username)
    assert page.locator("header .who").inner_text() == carol.id
    assert "No devices yet" in page.locator("main").inner_text()
    assert not [c for c in page.context.cookies() if c["name"] == "__Host-imprint-oidc"]
    entries = console.runtime.audit.search(AuditQuery())
    assert any(e.action == "user.login" and e.actor.startswith("external:") for e in entries)


def test_a_callback_without_the_matching_state_is_refused(
    page: Any, federation: tuple[Service, Service], problems: Problems
) -> None:
    _, console = federation
    problems.expect("400")
    answer = page.goto(f"{console.base_url}/console/login/oidc/callback?code=abc&state=forged")
    assert answer is not None
    assert answer.status == 400
    assert page.get_by_role("alert").inner_text() == "The sign-in expired or did not start here."
    assert not [c for c in page.context.cookies() if c["name"] == "__Host-imprint-console"]
