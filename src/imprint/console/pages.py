"""What every console page uses: the signed-in user, templates, forms, flash messages.

* ``ConsoleUser`` (a dependency) is the :class:`~imprint.tenancy.access.Principal` of the
  session, the same shape the API's ``PrincipalDep`` gives, so
  :func:`~imprint.app.scoping.scope_of`, ``visible_device`` and
  :func:`~imprint.tenancy.access.authorize` work unchanged. Without a session the page
  redirects to the sign-in form.
* :func:`render` renders a template of ``templates/`` inside ``base.html``.
* :func:`form_of` reads a POST form and checks its CSRF token first.
* :func:`flash` shows a message on the next page; :func:`redirect` goes there (303).
* :class:`ConsoleRoute` turns errors into HTML pages: an
  :class:`~imprint.errors.ImprintError` becomes an error page with its status and code
  (a foreign device is a 404 page, exactly like a missing one), never a stack trace.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Any
from urllib.parse import quote

import jinja2
from fastapi import Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from imprint.api.identity import runtime_of
from imprint.api.problems import status_of
from imprint.console.csrf import check_csrf, csrf_field
from imprint.console.session import ConsoleSession, load_session
from imprint.errors import ImprintError
from imprint.logs import get_logger
from imprint.runtime import Runtime
from imprint.sealing import SealedSecretInvalid
from imprint.tenancy.access import Principal

__all__ = [
    "NAV",
    "ConsoleRoute",
    "ConsoleSessionDep",
    "ConsoleUser",
    "LoginRequired",
    "flash",
    "form_of",
    "redirect",
    "render",
]

log = get_logger(__name__)

FLASH_COOKIE = "__Host-imprint-flash"
_FLASH_CONTEXT = "console:flash"

# (label, path): the nav of base.html. Add a page's entry here when the page exists.
NAV: list[tuple[str, str]] = [
    ("Dashboard", "/console/"),
    ("Devices", "/console/devices"),
    ("Certificates", "/console/certificates"),
    ("Enrollments", "/console/enrollments"),
    ("Trusted CAs", "/console/trusted-cas"),
    ("Organizations", "/console/orgs"),
    ("Channels", "/console/channels"),
    ("Webhooks", "/console/webhooks"),
    ("Audit", "/console/audit"),
    ("Account", "/console/account"),
]

HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "same-origin",
}


def _fmt_time(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("imprint.console", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters["time"] = _fmt_time
ENV.filters["urlquote"] = lambda value: quote(str(value), safe="")


class LoginRequired(Exception):
    """No valid session: the page redirects to the sign-in form."""


def _session(request: Request) -> ConsoleSession:
    known: ConsoleSession | None = getattr(request.state, "console_session", None)
    if known is not None:
        return known
    session = load_session(runtime_of(request), request)
    if session is None:
        raise LoginRequired
    request.state.console_session = session
    return session


def _user(request: Request) -> Principal:
    return _session(request).principal


ConsoleSessionDep = Annotated[ConsoleSession, Depends(_session)]
ConsoleUser = Annotated[Principal, Depends(_user)]


def _take_flash(request: Request) -> dict[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw or len(raw) > 2000:
        return None
    try:
        sealed = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        data = json.loads(runtime_of(request).box.open(sealed, _FLASH_CONTEXT))
    except (binascii.Error, ValueError, SealedSecretInvalid):
        return None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        return None
    return {"kind": data.get("kind", "info"), "text": data.get("text", "")}


def flash(request: Request, response: Response, text: str, kind: str = "success") -> None:
    """Show ``text`` once on the next rendered page (kind: success, info or error)."""
    payload = json.dumps({"kind": kind, "text": text[:300]}).encode()
    sealed = runtime_of(request).box.seal(payload, _FLASH_CONTEXT)
    response.set_cookie(
        FLASH_COOKIE,
        base64.urlsafe_b64encode(sealed).decode("ascii").rstrip("="),
        max_age=120,
        path="/",
        secure=True,
        httponly=True,
        samesite="strict",
    )


def redirect(url: str) -> RedirectResponse:
    """303 to a console path (only local paths: never an open redirect)."""
    if not url.startswith("/console") or url.startswith("//"):
        url = "/console/"
    return RedirectResponse(url, status_code=303, headers=HEADERS)


def _org_namer(request: Request) -> Callable[[str | None], str]:
    """``org_name(id)`` of the templates: an organization's name (its id when it has
    none); the tree is read once per page, when first asked."""
    names: dict[str, str] = {}

    def org_name(org_id: str | None) -> str:
        if org_id is None:
            return "instance"
        if not names:
            names.update({o.id: o.name for o in runtime_of(request).org_tree().orgs.values()})
            names.setdefault("", "")
        return names.get(org_id, org_id)

    return org_name


def render(request: Request, template: str, **context: Any) -> HTMLResponse:
    """Render ``templates/<template>`` (which extends base.html).

    The context always has ``user`` (the Principal or None), ``org_name(id)`` (an
    organization's name, for showing organizations by name), ``nav``, ``active`` (the
    nav path of this page), ``flash``, ``csrf_field()`` and ``request``. ``status``
    (default 200) is the HTTP status, ``csrf_token`` overrides the session's token.
    """
    status = int(context.pop("status", 200))
    session: ConsoleSession | None = getattr(request.state, "console_session", None)
    message = _take_flash(request)
    token = context.pop("csrf_token", None) or (session.csrf if session else "")
    body = ENV.get_template(template).render(
        request=request,
        user=session.principal if session else None,
        org_name=_org_namer(request),
        nav=NAV,
        active=context.pop("active", ""),
        flash=message,
        csrf_field=lambda: csrf_field(token),
        **context,
    )
    response = HTMLResponse(body, status_code=status, headers=HEADERS)
    if message is not None:
        response.delete_cookie(FLASH_COOKIE, path="/", secure=True, httponly=True)
    return response


async def form_of(request: Request) -> Mapping[str, str]:
    """The POST form's text fields, after the session's CSRF check.

    Raises:
        LoginRequired: no session.
        CsrfRefused: the token is missing or wrong.
    """
    session = _session(request)
    form = await request.form()
    check_csrf(session.csrf, form.get("csrf"))
    return {k: v for k, v in form.items() if isinstance(v, str) and len(v) <= 10_000}


def error_page(request: Request, status: int, code: str, message: str) -> HTMLResponse:
    return render(
        request, "error.html", status=status, code=code, message=message, title=f"Error {status}"
    )


class ConsoleRoute(APIRoute):
    """A route whose errors are HTML pages (the API answers problem+json instead)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired:
                target = request.url.path
                if request.method == "GET" and request.url.query:
                    target += f"?{request.url.query}"
                return redirect(f"/console/login?next={quote(target, safe='')}")
            except ImprintError as exc:
                status = status_of(exc)
                if status >= 500:
                    log.error("console.error", code=exc.code, error=exc.message)
                    return error_page(request, status, exc.code, "Something went wrong.")
                return error_page(request, status, exc.code, exc.message)
            except RequestValidationError:
                return error_page(
                    request, 400, "invalid_request", "The request has an invalid parameter."
                )
            except StarletteHTTPException as exc:
                return error_page(request, exc.status_code, "http_error", str(exc.detail))

        return handle


def runtime(request: Request) -> Runtime:
    return runtime_of(request)


_STATIC_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def static_file(name: str) -> tuple[bytes, str] | None:
    """A file of ``static/`` by its name, with its media type.

    ``name`` is a plain file name or a short path of plain names below ``static/``
    (``vendor/uplot/uPlot.iife.min.js``): no ``..``, no hidden files, no other suffixes
    than .css, .js and .svg.
    """
    types = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
    parts = name.split("/")
    suffix = name[name.rfind(".") :] if "." in parts[-1] else ""
    if (
        len(parts) > 3
        or suffix not in types
        or not all(_STATIC_PART.fullmatch(part) and ".." not in part for part in parts)
    ):
        return None
    path = resources.files("imprint.console").joinpath("static", *parts)
    if not path.is_file():
        return None
    return path.read_bytes(), types[suffix]
