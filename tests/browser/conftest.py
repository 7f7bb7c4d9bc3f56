"""Browser tests: Debian's chromium, driven by Playwright, against a real imprint.

* ``console`` — imprint serving HTTPS on SQLite, with organizations ``acme`` (root),
  ``acme-east`` and ``acme-west`` below it, and an admin of ``acme``.
* ``browser`` — one chromium for the session (``/usr/bin/chromium``; never downloaded).
  Without it the tests are skipped, except under ``CI=true`` where they fail.
* ``page`` — a fresh browser context per test that records console errors, page
  errors and failed requests, and FAILS the test if there were any. The context is
  closed as soon as the test body returns, before the server fixtures stop, so a
  request chromium makes lazily (the favicon) never meets a stopped server.
* ``login(page, console, user)`` signs in through the form; ``screenshot(page, name)``
  saves ``test-artifacts/screenshots/<name>-1280.png`` and ``-390.png``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

from imprint.settings import Settings
from imprint.tenancy.orgs import create_organization
from imprint.tenancy.roles import Role
from imprint.tenancy.users import create_user
from tests.integration.conftest import Service, start_service

CHROMIUM = Path(os.environ.get("IMPRINT_TEST_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
WIDTHS = {"1280": (1280, 900), "390": (390, 844)}
PASSWORD = "correct horse battery staple"


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"chromium is required in CI: {reason}")
    pytest.skip(f"browser tests need chromium: {reason}")


@dataclass(frozen=True)
class User:
    username: str
    password: str
    org: str


@dataclass
class Console:
    service: Service
    admin: User
    users: dict[str, User] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"{self.service.base_url}/console"

    def add_user(self, username: str, org: str, role: Role = Role.ADMIN) -> User:
        runtime = self.service.runtime
        create_user(
            runtime.users, username, PASSWORD, org_id=org, role=role, at=runtime.clock.now()
        )
        user = User(username, PASSWORD, org)
        self.users[username] = user
        return user


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    """imprint on SQLite with an organization tree and an admin of its root."""
    settings = Settings(
        data_dir=tmp_path / "data",
        database={"url": f"sqlite:///{tmp_path}/imprint.db"},
        ca={"passphrase": "test-passphrase"},
    )
    for service in start_service(settings, tmp_path):
        orgs, now = service.runtime.orgs, service.clock.now()
        create_organization(orgs, "Acme", org_id="acme", at=now)
        create_organization(orgs, "Acme East", org_id="acme-east", parent_id="acme", at=now)
        create_organization(orgs, "Acme West", org_id="acme-west", parent_id="acme", at=now)
        console = Console(service, User("admin@acme.example", PASSWORD, "acme"))
        create_user(
            service.runtime.users,
            console.admin.username,
            PASSWORD,
            org_id="acme",
            role=Role.ADMIN,
            at=now,
        )
        yield console


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """One chromium for the browser tests. Package scope: Playwright's sync API keeps an
    event loop running in the main thread while it lives, which code in later tests that
    starts its own loop (zeroconf's sync API) would otherwise trip over."""
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        _unavailable(f"{CHROMIUM} not found (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # pragma: no cover - a dev dependency
        _unavailable(f"playwright is not installed ({exc})")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        yield chromium
        chromium.close()


@dataclass
class Problems:
    """What the browser reported: any entry fails the test."""

    entries: list[str] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)

    def expect(self, fragment: str) -> None:
        """Allow one reported error containing ``fragment`` (e.g. a 404 page we asked for)."""
        self.expected.append(fragment)

    def unexpected(self) -> list[str]:
        left = list(self.expected)
        found = []
        for entry in self.entries:
            match = next((f for f in left if f in entry), None)
            if match is None:
                found.append(entry)
            else:
                left.remove(match)
        return found


@pytest.fixture
def problems() -> Problems:
    return Problems()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Close the test's browser context when its body returns. Fixtures are torn down in
    reverse order of set-up, so a server fixture named after ``page`` would otherwise stop
    while the page may still be fetching something."""
    yield
    page = getattr(item, "funcargs", {}).get("page")
    if page is not None and not page.is_closed():
        page.context.close()


@pytest.fixture
def page(browser: Any, problems: Problems) -> Iterator[Any]:
    """A page at 1280 px that fails the test on console errors or page errors."""
    page = open_page(browser, problems)
    yield page
    page.context.close()  # a no-op when pytest_runtest_call closed it already
    unexpected = problems.unexpected()
    assert not unexpected, "the browser reported errors:\n" + "\n".join(unexpected)


def open_page(browser: Any, problems: Problems, **options: Any) -> Any:
    """A page in a new browser context (``options`` as Playwright's ``new_context``
    takes them: ``timezone_id``, ``java_script_enabled``, ...) whose console errors,
    page errors and failed requests go to ``problems``."""
    options = {"viewport": {"width": 1280, "height": 900}, **options}
    context = browser.new_context(ignore_https_errors=True, **options)
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.on(
        "console",
        lambda msg: (
            problems.entries.append(
                f"console.{msg.type}: {msg.text} ({msg.location.get('url', '')})"
            )
            if msg.type in ("error", "warning")
            else None
        ),
    )
    page.on("pageerror", lambda exc: problems.entries.append(f"pageerror: {exc}"))
    page.on(
        "requestfailed",
        lambda request: (
            problems.entries.append(f"requestfailed: {request.url} ({request.failure})")
            if request.failure != "net::ERR_ABORTED"  # cancelled by the next navigation
            else None
        ),
    )
    return page


def login(page: Any, console: Console, user: User) -> None:
    page.goto(f"{console.url}/login")
    page.get_by_label("User name").fill(user.username)
    page.get_by_label("Password").fill(user.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{console.url}/")


def screenshot(page: Any, name: str) -> list[Path]:
    """Save the page at 1280 and 390 px wide (full height); back to 1280 afterwards."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    saved = []
    for label, (width, height) in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": height})
        path = SCREENSHOTS / f"{name}-{label}.png"
        page.screenshot(path=str(path), full_page=True)
        saved.append(path)
    page.set_viewport_size({"width": 1280, "height": 900})
    return saved
