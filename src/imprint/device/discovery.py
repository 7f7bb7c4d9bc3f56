"""Finding the imprint server: a URL you give, or one a discovery hook finds.

A :class:`Discoverer` is any callable that takes a timeout in seconds and returns the
candidate URLs it found, best first. :func:`dns_sd` is the one imprint ships: it browses
the local network by multicast DNS for ``_imprint._tcp`` (python-zeroconf, imported only
when discovery is used). Whatever found the URL, the server's certificate is verified as
always, so a discovered server is trusted only when it proves it is the one the device
was told to trust.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from imprint.device.client import ImprintClient
from imprint.device.errors import ServerNotFound

__all__ = ["IMPRINT_SERVICE", "Discoverer", "browse", "connect_to", "dns_sd", "locate"]

#: The DNS-SD service type imprint servers announce.
IMPRINT_SERVICE = "_imprint._tcp.local."


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


def browse(
    timeout: float,
    *,
    service_type: str = IMPRINT_SERVICE,
    interfaces: Sequence[str] | None = None,
) -> list[str]:
    """Browse by mDNS for ``timeout`` seconds; the servers' URLs, in the order found.

    For each instance: the ``url=`` of its TXT record first (the server's own base URL,
    whose name its certificate carries), then ``https://ADDRESS:PORT`` per address.

    Args:
        timeout: seconds to listen; returns as soon as one server is fully resolved.
        service_type: the DNS-SD type, ``_imprint._tcp.local.`` by default.
        interfaces: IPv4 addresses to browse on (default: all).
    """
    import threading
    import time

    from zeroconf import InterfaceChoice, IPVersion, ServiceBrowser, ServiceListener, Zeroconf

    names: list[str] = []
    seen = threading.Event()

    class _Found(ServiceListener):
        def add_service(self, zc: Zeroconf, type_: str, name: str) -> None:
            if name not in names:
                names.append(name)
            seen.set()

        def update_service(self, zc: Zeroconf, type_: str, name: str) -> None:
            self.add_service(zc, type_, name)

        def remove_service(self, zc: Zeroconf, type_: str, name: str) -> None:
            return None

    deadline = time.monotonic() + timeout
    zeroconf = Zeroconf(
        interfaces=list(interfaces) if interfaces else InterfaceChoice.All,
        ip_version=IPVersion.V4Only,
    )
    try:
        browser = ServiceBrowser(zeroconf, service_type, _Found())
        try:
            seen.wait(timeout)
            urls: list[str] = []
            for name in list(names):
                left = max(deadline - time.monotonic(), 0.5)
                info = zeroconf.get_service_info(service_type, name, timeout=int(left * 1000))
                if info is None or not info.port:
                    continue
                url = info.properties.get(b"url")
                if url:
                    urls.append(url.decode("utf-8", "replace"))
                urls.extend(f"https://{a}:{info.port}" for a in info.parsed_addresses())
            return list(dict.fromkeys(urls))
        finally:
            browser.cancel()
    finally:
        zeroconf.close()


def dns_sd(interfaces: Sequence[str] | None = None) -> Discoverer:
    """A :class:`Discoverer` that browses for ``_imprint._tcp`` (see :func:`browse`)."""

    def discover(timeout: float) -> Sequence[str]:
        return browse(timeout, interfaces=interfaces)

    return discover


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
