"""DNS-SD advertisement: devices on the local network find imprint without a URL.

Two service types are announced by multicast DNS on the port the server listens on:
``_imprint._tcp`` (the native directory at ``/.well-known/imprint``) and ``_idprov._tcp``
(the idprov directory at ``/idprov/directory``). The TXT record of each names its
directory under both ``path=`` and ``directory=`` and gives the server's base URL as
``url=``. Finding a server this way proves nothing: the device still checks the server's
certificate against the CA it was told to trust.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

from imprint import __version__
from imprint.logs import get_logger
from imprint.settings import DiscoverySettings

__all__ = ["SERVICE_TYPES", "Advertiser", "Announcement"]

log = get_logger(__name__)

#: DNS-SD service type → the directory path that type announces.
SERVICE_TYPES: dict[str, str] = {
    "_imprint._tcp.local.": "/.well-known/imprint",
    "_idprov._tcp.local.": "/idprov/directory",
}


@dataclass(frozen=True, slots=True)
class Announcement:
    """One advertised service: its DNS-SD type, full instance name and TXT record."""

    service_type: str
    name: str
    port: int
    properties: dict[str, str]


def announcements(settings: DiscoverySettings, port: int, base_url: str) -> list[Announcement]:
    """What :class:`Advertiser` announces for a server on ``port``."""
    result = []
    for service_type, path in SERVICE_TYPES.items():
        properties = {
            "path": path,
            "directory": path,
            "url": base_url,
            "version": __version__,
        }
        name = f"{settings.name}.{service_type}"
        result.append(Announcement(service_type, name, port, properties))
    return result


class Advertiser:
    """Announces the server by mDNS while it runs (see :meth:`start` and :meth:`stop`).

    Runs in the server's event loop: python-zeroconf's asyncio API shares the loop.
    """

    def __init__(self, settings: DiscoverySettings, base_url: str) -> None:
        self._settings = settings
        self._base_url = base_url
        self._zeroconf: object | None = None

    async def start(self, port: int) -> list[Announcement]:
        """Register both service types; returns what was announced."""
        from zeroconf import InterfaceChoice, IPVersion, ServiceInfo
        from zeroconf.asyncio import AsyncZeroconf

        interfaces = list(self._settings.interfaces)
        zeroconf = AsyncZeroconf(
            interfaces=interfaces or InterfaceChoice.All,
            ip_version=IPVersion.V4Only,
        )
        self._zeroconf = zeroconf
        addresses = interfaces or _local_addresses()
        host = f"{self._settings.name}-{socket.gethostname().split('.')[0]}.local."
        made = announcements(self._settings, port, self._base_url)
        # Both types probe for their names at once (each takes about 1.5 s).
        pending = [
            await zeroconf.async_register_service(
                ServiceInfo(
                    item.service_type,
                    item.name,
                    port=port,
                    properties=item.properties,
                    server=host,
                    parsed_addresses=addresses,
                ),
                allow_name_change=True,
            )
            for item in made
        ]
        await asyncio.gather(*pending)
        for item in made:
            log.info("dns_sd_registered", service=item.name, port=port)
        return made

    async def stop(self) -> None:
        """Withdraw the announcements (sends goodbye packets) and close the sockets."""
        from zeroconf.asyncio import AsyncZeroconf

        zeroconf, self._zeroconf = self._zeroconf, None
        if isinstance(zeroconf, AsyncZeroconf):
            await zeroconf.async_unregister_all_services()
            await zeroconf.async_close()


def _local_addresses() -> list[str]:
    """This host's IPv4 addresses, loopback last (what a device on the LAN can reach)."""
    import ifaddr

    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                found.append(ip.ip)
    return sorted(set(found), key=lambda a: a.startswith("127."))
