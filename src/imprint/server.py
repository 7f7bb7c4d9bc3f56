"""Run the HTTPS service with uvicorn."""

from __future__ import annotations

import ssl
from typing import Any

import uvicorn

from imprint.api import create_app
from imprint.runtime import Runtime
from imprint.tls import PeerCertificateProtocol, server_ssl_context

__all__ = ["build_server", "ssl_context_for"]


def ssl_context_for(runtime: Runtime) -> ssl.SSLContext:
    """The server's TLS context; client certificates are verified against our CA chain
    and the CAs of enrollments (``runtime.client_trust``)."""
    wants_client_certs = runtime.settings.server.client_certificates == "optional"
    return server_ssl_context(
        certfile=runtime.server_certfile,
        keyfile=runtime.server_keyfile,
        client_trust=runtime.client_trust if wants_client_certs else None,
    )


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
    return uvicorn.Server(config)
