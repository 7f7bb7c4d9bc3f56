"""Finding the imprint server: a URL you give, or one a discovery hook finds.

Discovery on the local network (DNS-SD) comes later, as a :class:`Discoverer`: any
callable that takes a timeout in seconds and returns the candidate URLs it found,
best first. Nothing else changes for the caller: whatever found the URL, the server's
certificate is verified as always, so a discovered server is trusted only when it
proves it is the one the device was told to trust.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from imprint.device.client import ImprintClient
from imprint.device.errors import ServerNotFound

__all__ = ["Discoverer", "connect_to", "locate"]


class Discoverer(Protocol):
    """Finds imprint servers; returns candidate URLs (``https://host:port``), best first."""

    def __call__(self, timeout: float) -> Sequence[str]: ...


def locate(
    url: str | None = None, *, discover: Discoverer | None = None, timeout: float = 5.0
) -> str:
    """The server's URL: ``url`` when given, else the first one ``discover`` finds.

    Raises:
        ServerNotFound: no URL, and no discoverer or it found nothing.
    """
    if url:
        return url
    if discover is None:
        raise ServerNotFound("no server URL given and no discovery configured")
    found = [u for u in discover(timeout) if u]
    if not found:
        raise ServerNotFound(f"discovery found no imprint server within {timeout:g} s")
    return found[0]


def connect_to(
    url: str | None = None,
    *,
    discover: Discoverer | None = None,
    timeout: float = 5.0,
    **options: Any,
) -> ImprintClient:
    """An :class:`ImprintClient` for the server at ``url`` or the one discovery finds.

    Args:
        url: as for :meth:`ImprintClient.from_url`.
        discover: used only when ``url`` is None.
        timeout: for discovery.
        **options: as for :class:`ImprintClient` (``ca_file``, ``retry``, ...).

    Raises:
        ServerNotFound: as for :func:`locate`.
        ValueError, OSError: as for :class:`ImprintClient`.
    """
    return ImprintClient.from_url(locate(url, discover=discover, timeout=timeout), **options)
