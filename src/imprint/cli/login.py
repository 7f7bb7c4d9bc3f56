"""``imprint login`` / ``logout`` / ``profile``: connect the command line to a server.

Two credentials: an API key (the whole instance), or a user's sign-in. A user signs in
either with her password, which goes to the server's sign-in form for the command
line's built-in public OAuth client (authorization code with PKCE, RFC 7636; the code
comes back in the redirect to a loopback address and is exchanged at once, so no
browser and no listening port are needed), or with ``--device`` (the device
authorization grant, RFC 8628): the command line shows a code, she approves it in the
console in any browser, and the command line's polls then get her token; her password
never passes through the command line. A user's token runs out after
``auth.token_lifetime_seconds``; ``imprint login`` again then.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

import httpx
import typer

from imprint.auth.clients import COMMAND_LINE_CLIENT
from imprint.cli import _fail, err, out, read_secret
from imprint.cli.calls import Api, RemoteError, selection
from imprint.cli.output import Column, OutputOption, render_page
from imprint.cli.profiles import PROFILE_ENV, Profile, ProfileBook, config_dir, private_dir

profile_app = typer.Typer(help="List, pick and remove server profiles.", no_args_is_help=True)

_REDIRECT = COMMAND_LINE_CLIENT.redirect_uris[0]


def _server(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        _fail(f"--server {url!r}: an https:// URL", 2)
    return url.rstrip("/")


def _client(server: str, ca_file: str | None) -> httpx.Client:
    import ssl

    verify: ssl.SSLContext | bool = True
    if ca_file:
        try:
            verify = ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            _fail(f"cannot load the CA file {ca_file}: {exc}")
    return httpx.Client(base_url=server, verify=verify, timeout=30, follow_redirects=False)


def password_sign_in(
    server: str, ca_file: str | None, username: str, password: str, organization: str | None
) -> tuple[str, int]:
    """A user's access token and its lifetime in seconds.

    Raises:
        RemoteError: the server refused the sign-in, or cannot be reached.
    """
    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest())
        .rstrip(b"=")
        .decode("ascii")
    )
    state = secrets.token_urlsafe(16)
    form = {
        "response_type": "code",
        "client_id": COMMAND_LINE_CLIENT.client_id,
        "redirect_uri": _REDIRECT,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": state,
        "username": username,
        "password": password,
    }
    if organization:
        form["organization"] = organization
    try:
        with _client(server, ca_file) as http:
            answer = http.post("/oauth/authorize", data=form)
            if answer.status_code == 401:
                raise RemoteError("wrong user name or password", 401)
            if answer.status_code == 429:
                raise RemoteError("too many failed sign-ins; try again later", 429)
            location = answer.headers.get("location", "")
            if answer.status_code != 303 or not location.startswith(_REDIRECT):
                raise RemoteError(
                    f"the server does not offer password sign-in here (HTTP {answer.status_code})"
                )
            query = parse_qs(urlsplit(location).query)
            if "error" in query:
                raise RemoteError(f"sign-in refused: {query.get('error_description', ['?'])[0]}")
            if query.get("state") != [state] or "code" not in query:
                raise RemoteError("the server's answer to the sign-in does not match the request")
            token = http.post(
                "/oauth/token",
                data={
                    "grant_type": "authorization_code",
                    "client_id": COMMAND_LINE_CLIENT.client_id,
                    "code": query["code"][0],
                    "redirect_uri": _REDIRECT,
                    "code_verifier": verifier,
                },
            )
    except httpx.HTTPError as exc:
        raise RemoteError(f"cannot reach {server}: {exc}") from None
    if token.status_code != 200:
        raise RemoteError(f"the token exchange failed (HTTP {token.status_code}): {token.text}")
    body: dict[str, Any] = token.json()
    return str(body["access_token"]), int(body.get("expires_in", 3600))


def device_sign_in(server: str, ca_file: str | None) -> tuple[str, int]:
    """A user's access token and its lifetime, once she approves the code shown.

    Polls the token endpoint every ``interval`` seconds (5 more after each
    ``slow_down``) until the code is approved, denied or expired.

    Raises:
        RemoteError: denied, expired, refused, or the server cannot be reached.
    """
    from imprint.auth.clients import DEVICE_CODE

    client_id = COMMAND_LINE_CLIENT.client_id
    try:
        with _client(server, ca_file) as http:
            asked = http.post("/oauth/device_authorization", data={"client_id": client_id})
            if asked.status_code != 200:
                raise RemoteError(
                    f"the server does not offer device sign-in (HTTP {asked.status_code}: "
                    f"{_oauth_detail(asked)})"
                )
            grant: dict[str, Any] = asked.json()
            interval = max(1, int(grant.get("interval", 5)))
            deadline = time.monotonic() + int(grant.get("expires_in", 600))
            err.print(
                f"To sign in, open {grant['verification_uri']} in a browser, sign in and enter "
                f"the code {grant['user_code']}\n(or open "
                f"{grant.get('verification_uri_complete', grant['verification_uri'])}).\n"
                "Waiting for approval ..."
            )
            sys.stderr.flush()
            while True:
                time.sleep(interval)
                answer = http.post(
                    "/oauth/token",
                    data={
                        "grant_type": DEVICE_CODE,
                        "client_id": client_id,
                        "device_code": grant["device_code"],
                    },
                )
                if answer.status_code == 200:
                    body: dict[str, Any] = answer.json()
                    return str(body["access_token"]), int(body.get("expires_in", 3600))
                error = _oauth_error_code(answer)
                if error == "authorization_pending":
                    pass
                elif error == "slow_down":
                    interval += 5
                elif error == "access_denied":
                    raise RemoteError("the sign-in was denied in the console; not logged in")
                elif error == "expired_token" or time.monotonic() > deadline + interval:
                    raise RemoteError(
                        "the code expired before it was approved; run imprint login --device again"
                    )
                else:
                    raise RemoteError(f"the sign-in failed: {_oauth_detail(answer)}")
    except httpx.HTTPError as exc:
        raise RemoteError(f"cannot reach {server}: {exc}") from None


def _oauth_error_code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return str(body.get("error")) if isinstance(body, dict) and body.get("error") else None


def _oauth_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if isinstance(body, dict):
        detail = body.get("error_description") or body.get("detail") or body.get("error")
        if detail:
            return str(detail)
    return f"HTTP {response.status_code}"


def _keep_ca_file(ca_file: Path, profile: str) -> str:
    """A copy of the CA file beside the profiles, so the profile outlives the original."""
    try:
        data = ca_file.read_bytes()
    except OSError as exc:
        _fail(f"cannot read {ca_file}: {exc.strerror}")
    private_dir(config_dir())
    folder = private_dir(config_dir() / "ca")
    kept = folder / f"{profile}.pem"
    kept.write_bytes(data)
    return str(kept)


def login(
    server: str,
    profile: str | None,
    username: str | None,
    organization: str | None,
    ca_file: Path | None,
    *,
    device: bool = False,
) -> None:
    """``imprint login``: check the credential against the server, then save the profile
    and make it current."""
    import os

    if device and username is not None:
        _fail("--device or --username, not both", 2)
    name = profile or selection.profile or os.environ.get(PROFILE_ENV) or "default"
    url = _server(server)
    kept = _keep_ca_file(ca_file, name) if ca_file is not None else None
    expires_at = None
    if device:
        try:
            token, lifetime = device_sign_in(url, kept)
            username = _whoami(url, kept, token)
        except RemoteError as exc:
            _fail(exc.message)
        kind = "user"
        expires_at = (datetime.now(UTC) + timedelta(seconds=lifetime)).isoformat()
    elif username is not None:
        password = read_secret("Password")
        try:
            token, lifetime = password_sign_in(url, kept, username, password, organization)
        except RemoteError as exc:
            _fail(exc.message)
        kind = "user"
        expires_at = (datetime.now(UTC) + timedelta(seconds=lifetime)).isoformat()
    else:
        token = os.environ.get("IMPRINT_TOKEN") or read_secret("API key")
        kind = "api-key"
    if not token:
        _fail("no credential given", 2)
    candidate = Profile(
        name=name,
        server=url,
        token=token,
        kind=kind,
        ca_file=kept,
        username=username,
        expires_at=expires_at,
    )
    api = Api(candidate)
    try:
        orgs = api.get("/api/v1/orgs")
    except RemoteError as exc:
        _fail(exc.message)
    finally:
        api.close()
    book = ProfileBook()
    book.put(candidate)
    who = f"user {username}" if username else "an API key"
    err.print(
        f"logged in to {url} as {who}; profile {name!r} saved in {book.path} and made current "
        f"({orgs.get('total', len(orgs.get('items', [])))} organization(s) visible)"
    )


def _whoami(server: str, ca_file: str | None, token: str) -> str:
    """The user name a token belongs to."""
    probe = Api(Profile(name="-", server=server, token=token, kind="user", ca_file=ca_file))
    try:
        me: dict[str, Any] = probe.get("/api/v1/whoami")
    finally:
        probe.close()
    return str(me.get("name") or "?")


def logout(profile: str | None) -> None:
    """``imprint logout``: forget a profile and the copy of its CA file."""
    import os

    book = ProfileBook()
    name = profile or selection.profile or os.environ.get(PROFILE_ENV) or book.current
    if name is None or not book.remove(name):
        _fail(f"no profile {name!r}" if name else "not logged in")
    kept = config_dir() / "ca" / f"{name}.pem"
    if kept.exists():
        kept.unlink()
    out.print(f"profile {name!r} removed")


@profile_app.command("list")
def list_profiles(output: OutputOption = None) -> None:
    """The saved profiles (never their credentials)."""
    book = ProfileBook()
    items = []
    for name in book.names():
        entry = book.get(name)
        items.append(
            {
                "name": name,
                "current": name == book.current,
                "server": entry.server,
                "kind": entry.kind,
                "username": entry.username,
                "expires_at": entry.expires_at,
            }
        )
    columns = [
        Column("name", "name", key=True),
        Column("current", "current"),
        Column("server", "server", key=True),
        Column("credential", "kind"),
        Column("user", "username"),
        Column("expires", "expires_at"),
    ]
    render_page(
        {"items": items, "total": len(items), "next": None}, columns, output, noun="profile(s)"
    )


@profile_app.command("use")
def use(name: Annotated[str, typer.Argument(help="Profile name")]) -> None:
    """Make a profile the current one."""
    from imprint.errors import ConfigurationError

    try:
        ProfileBook().use(name)
    except ConfigurationError as exc:
        _fail(exc.message, 2)
    out.print(f"profile {name!r} is current")
