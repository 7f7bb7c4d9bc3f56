"""Where a command's one operation runs: on this machine's data directory, or on a
remote server through the REST API.

Each admin command parses its options, then calls :func:`perform` with the operation
twice over: ``local`` calls ``runtime.app.<aggregate>.<operation>`` as the command line
(``cli:<os user>``), ``remote`` calls the REST route that calls the same operation as
the profile's credential. Both return the REST API's JSON shape (the local side builds
it with the API's own response models), so what a command prints is the same whichever
side answered.

Remote is chosen by ``--profile NAME`` (or ``$IMPRINT_PROFILE``), or by the profile
``imprint login`` made current; ``--local`` forces the data directory.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple, Protocol, TypeVar

import typer

from imprint.cli.profiles import PROFILE_ENV, Profile, ProfileBook
from imprint.errors import ConfigurationError

if TYPE_CHECKING:
    from imprint.runtime import Database, Runtime
    from imprint.tenancy.access import Principal

__all__ = [
    "AllOption",
    "Api",
    "CursorOption",
    "LimitOption",
    "Paging",
    "RemoteError",
    "all_pages",
    "paged",
    "perform",
    "remote_profile",
    "selection",
]

T = TypeVar("T")

LimitOption = Annotated[int, typer.Option(help="At most this many a page (1 to 1000)")]
CursorOption = Annotated[str | None, typer.Option(help="Start at this page (a list's next)")]
AllOption = Annotated[bool, typer.Option("--all", help="Every page from here")]


class Paging(NamedTuple):
    """A list command's --limit, --cursor and --all."""

    limit: int
    cursor: str | None
    every: bool


class _Page(Protocol):
    """What an application operation's ``page`` returns (:class:`imprint.app.base.Page`)."""

    @property
    def items(self) -> Any: ...
    @property
    def total(self) -> int: ...
    @property
    def next(self) -> str | None: ...


class Selection:
    """What the global options chose: a profile name, or the data directory."""

    profile: str | None = None
    local: bool = False


selection = Selection()


class RemoteError(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def remote_profile() -> Profile | None:
    """The profile this command runs against, or None for the local data directory.

    Raises:
        ConfigurationError: a named profile that does not exist.
    """
    if selection.local:
        return None
    name = selection.profile or os.environ.get(PROFILE_ENV) or None
    book = ProfileBook()
    if name is None:
        name = book.current
        if name is None or name not in book.names():
            return None
    return book.get(name)


class Api:
    """The REST API of one server, as one profile's credential."""

    def __init__(self, profile: Profile) -> None:
        import httpx  # only remote commands pay for importing it

        self.profile = profile
        verify: ssl.SSLContext | bool = True
        if profile.ca_file:
            try:
                verify = ssl.create_default_context(cafile=profile.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise RemoteError(f"cannot load the CA file {profile.ca_file}: {exc}") from None
        self._client = httpx.Client(
            base_url=profile.server,
            verify=verify,
            timeout=60,
            headers={"Authorization": f"Bearer {profile.token}", "Accept": "application/json"},
        )

    def close(self) -> None:
        self._client.close()

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params=params)

    def post(self, path: str, body: Any = None, **params: Any) -> Any:
        return self.call("POST", path, body=body, params=params)

    def patch(self, path: str, body: Any) -> Any:
        return self.call("PATCH", path, body=body)

    def put(self, path: str, body: Any) -> Any:
        return self.call("PUT", path, body=body)

    def delete(self, path: str, **params: Any) -> Any:
        return self.call("DELETE", path, params=params)

    def lines(self, path: str) -> Iterator[str]:
        """The lines of a streamed answer (JSON lines), as they arrive.

        Raises:
            RemoteError: the server refused, or cannot be reached.
        """
        import httpx

        try:
            with self._client.stream("GET", path) as response:
                if response.status_code >= 400:
                    response.read()
                    raise RemoteError(_detail(response), response.status_code)
                yield from response.iter_lines()
        except httpx.HTTPError as exc:
            raise RemoteError(f"cannot reach {self.profile.server}: {exc}") from None

    def call(
        self, method: str, path: str, *, body: Any = None, params: Mapping[str, Any] | None = None
    ) -> Any:
        """Send one request; the JSON answer (None for 204).

        Raises:
            RemoteError: the server refused (its problem's detail), or cannot be reached.
        """
        import httpx

        query = {k: _param(v) for k, v in (params or {}).items() if v is not None}
        try:
            response = self._client.request(method, path, json=body, params=query)
        except httpx.HTTPError as exc:
            raise RemoteError(f"cannot reach {self.profile.server}: {exc}") from None
        if response.status_code == 401:
            raise RemoteError(
                f"the server refused the credential of profile {self.profile.name!r} "
                f"({_detail(response)}); log in again: imprint login --server "
                f"{self.profile.server} --profile {self.profile.name}",
                401,
            )
        if response.status_code >= 400:
            raise RemoteError(_detail(response), response.status_code)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()


def _param(value: Any) -> Any:
    return value.value if hasattr(value, "value") else value


def _detail(response: Any) -> str:
    try:
        problem = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if isinstance(problem, dict):
        detail = problem.get("detail") or problem.get("title") or problem.get("error")
        if isinstance(detail, list):  # a validation error: each field and its message
            detail = "; ".join(
                f"{'.'.join(str(p) for p in e.get('loc', [])[1:])}: {e.get('msg')}"
                for e in detail
                if isinstance(e, dict)
            )
        if detail:
            return str(detail)
    return f"HTTP {response.status_code}"


@contextmanager
def _api(profile: Profile) -> Iterator[Api]:
    if profile.expired(datetime.now(UTC)):
        raise RemoteError(
            f"the sign-in of profile {profile.name!r} has expired; log in again: imprint login "
            f"--server {profile.server} --profile {profile.name}"
        )
    api = Api(profile)
    try:
        yield api
    finally:
        api.close()


def perform(
    *,
    local: Callable[[Runtime, Principal], T] | None,
    remote: Callable[[Api], T],
    database: Callable[[Database, Principal], T] | None = None,
) -> T:
    """Run the command's operation where the options say; errors become one line and an
    exit code. ``database``: a local operation that needs no CA (the API keys)."""
    from imprint.cli import _database, _fail, _runtime
    from imprint.tenancy.access import cli_principal

    try:
        profile = remote_profile()
    except ConfigurationError as exc:
        _fail(exc.message, 2)
    if profile is not None:
        try:
            with _api(profile) as api:
                return remote(api)
        except RemoteError as exc:
            _fail(exc.message)
    if database is not None:
        with _database() as db:
            return database(db, cli_principal())
    if local is None:
        _fail("this command needs a server: imprint login --server URL")
    with _runtime() as runtime:
        return local(runtime, cli_principal())


def all_pages(
    fetch: Callable[[str | None], dict[str, Any]], cursor: str | None, every: bool
) -> dict[str, Any]:
    """One page from ``cursor``, or with ``every`` all pages from there, joined."""
    page = fetch(cursor)
    if not every:
        return page
    items = list(page.get("items", []))
    while page.get("next"):
        page = fetch(page["next"])
        items.extend(page.get("items", []))
    return {"items": items, "total": page.get("total", len(items)), "next": None}


def paged(
    local: Callable[[Any, Principal, str | None], _Page],
    path: str,
    *,
    item: Callable[[Any], dict[str, Any]],
    paging: Paging,
    params: Mapping[str, Any] | None = None,
    database: bool = False,
) -> dict[str, Any]:
    """A list command's pages: one from ``cursor`` or, with ``every``, all from there.

    On the server ``local(runtime, principal, after)`` returns an operation's page and
    ``item`` renders each as the REST API does; remotely ``GET path`` with ``limit``,
    ``after`` and ``params`` answers the same ``{"items", "total", "next"}``.
    ``database``: the operation needs the database alone (no CA).
    """
    from imprint.cli import _fail

    limit, cursor, every = paging
    if not 1 <= limit <= 1000:
        _fail("--limit: 1 to 1000", 2)

    def here(where: Any, principal: Principal) -> dict[str, Any]:
        def page(after: str | None) -> dict[str, Any]:
            found = local(where, principal, after)
            return {
                "items": [item(i) for i in found.items],
                "total": found.total,
                "next": found.next,
            }

        return all_pages(page, cursor, every)

    def there(api: Api) -> dict[str, Any]:
        def page(after: str | None) -> dict[str, Any]:
            answer: dict[str, Any] = api.get(path, limit=limit, after=after, **(params or {}))
            return answer

        return all_pages(page, cursor, every)

    if database:
        return perform(local=None, database=here, remote=there)
    return perform(local=here, remote=there)
