"""Run the HTTPS service with uvicorn."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import Any

import uvicorn

from imprint.api import create_app
from imprint.runtime import Runtime
from imprint.tls import PeerCertificateProtocol, server_ssl_context

__all__ = ["ImprintServer", "build_server", "ssl_context_for"]

log = logging.getLogger(__name__)

#: How often the server looks for client CAs added outside it (seconds).
TRUST_REFRESH_SECONDS = 5.0


def ssl_context_for(runtime: Runtime) -> ssl.SSLContext:
    """The server's TLS context; client certificates are verified against our CA chain
    and the CAs of enrollments (``runtime.client_trust``)."""
    wants_client_certs = runtime.settings.server.client_certificates == "optional"
    return server_ssl_context(
        certfile=runtime.server_certfile,
        keyfile=runtime.server_keyfile,
        client_trust=runtime.client_trust if wants_client_certs else None,
    )


class ImprintServer(uvicorn.Server):
    """uvicorn's server, plus the DNS-SD announcement while it listens (when enabled) and
    the refresh of the MQTT broker's CRL (with ``mqtt.enabled``)."""

    def __init__(self, config: uvicorn.Config, runtime: Runtime) -> None:
        super().__init__(config)
        self._runtime = runtime
        self._advertiser: Any = None
        self._trust_refresh: asyncio.Task[None] | None = None
        self._broker_refresh: asyncio.Task[None] | None = None

    async def _refresh_trust(self) -> None:
        """Keep the TLS gate in step with enrollments made elsewhere (the CLI, a peer)."""
        while True:
            await asyncio.sleep(TRUST_REFRESH_SECONDS)
            try:
                added = await asyncio.to_thread(self._runtime.refresh_client_trust)
            except Exception:  # a database hiccup must not stop the loop
                log.warning("could not refresh the client CAs from the database", exc_info=True)
                continue
            if added:
                log.info("client CAs admitted to the TLS handshake", extra={"count": added})

    async def _refresh_broker_files(self) -> None:
        """Re-sign the MQTT broker's CRL well before it expires (an expired CRL locks every
        device out of Mosquitto): every quarter of its validity, at most hourly."""
        from imprint.mqtt.broker import BrokerFiles, BrokerSync

        settings = self._runtime.settings
        files = BrokerFiles(settings.mqtt_dir())
        sync = BrokerSync(settings.mqtt, files, self._runtime.authority)
        while True:
            if files.config.is_file():
                try:
                    await asyncio.to_thread(sync.sync)
                except Exception:
                    log.warning("could not refresh the MQTT broker's CRL and ACL", exc_info=True)
            await asyncio.sleep(min(settings.ca.crl_validity_hours * 900.0, 3600.0))

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        listening = self._runtime.settings.server
        if listening.tls and listening.client_certificates == "optional":
            self._trust_refresh = asyncio.create_task(self._refresh_trust())
        if self._runtime.settings.mqtt.enabled:
            self._broker_refresh = asyncio.create_task(self._refresh_broker_files())
        discovery = self._runtime.settings.discovery
        if not discovery.enabled or self.should_exit:
            return
        from imprint.discovery import Advertiser

        port = self._runtime.settings.server.port
        for server in self.servers:
            for bound in server.sockets:
                port = bound.getsockname()[1]
        self._advertiser = Advertiser(discovery, self._runtime.settings.server.base_url())
        await self._advertiser.start(port)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._trust_refresh is not None:
            self._trust_refresh.cancel()
            self._trust_refresh = None
        if self._broker_refresh is not None:
            self._broker_refresh.cancel()
            self._broker_refresh = None
        if self._advertiser is not None:
            advertiser, self._advertiser = self._advertiser, None
            await advertiser.stop()
        await super().shutdown(sockets)


def build_server(runtime: Runtime) -> uvicorn.Server:
    """A uvicorn server for the runtime.

    Run it with ``server.run()``, or ``server.run(sockets=[sock])`` on a socket that is
    already bound (tests bind port 0).
    """
    settings = runtime.settings
    context = ssl_context_for(runtime) if settings.server.tls else None

    def context_factory(_config: Any, _default: Any) -> ssl.SSLContext:
        assert context is not None
        return context

    config = uvicorn.Config(
        create_app(runtime),
        host=settings.server.host,
        port=settings.server.port,
        http=PeerCertificateProtocol,
        ws="none",
        lifespan="off",
        proxy_headers=False,
        server_header=False,
        access_log=False,
        log_config=None,
        timeout_keep_alive=30,
        ssl_context_factory=context_factory if context is not None else None,
    )
    return ImprintServer(config, runtime)
