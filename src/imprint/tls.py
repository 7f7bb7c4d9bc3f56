"""TLS for the HTTPS server, and the client certificate handed to the application.

No ASGI server passes the client certificate of a mutual-TLS connection to the
application. :class:`PeerCertificateProtocol` closes that gap: when a connection is
made it reads the verified peer certificate from the ``ssl`` object once and adds it
to every request's scope as the ASGI TLS extension::

    scope["extensions"]["tls"] = {"client_cert_chain": [PEM], "tls_version": ..., ...}

Only certificates the handshake verified against the CA bundle (a
:class:`~imprint.client_trust.ClientTrust`) get there, because
the context verifies in ``CERT_OPTIONAL`` mode: a client may present no certificate,
but one that does not verify ends the handshake.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from imprint.client_trust import ClientTrust

__all__ = ["PeerCertificateProtocol", "server_ssl_context"]

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def server_ssl_context(
    *, certfile: Path, keyfile: Path, client_trust: ClientTrust | None
) -> ssl.SSLContext:
    """A TLS 1.2+ server context; with ``client_trust``, client certificates are optional
    but verified against its CAs when presented (including CAs added later)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    if client_trust is not None:
        client_trust.attach(context)
        context.verify_mode = ssl.CERT_OPTIONAL
    context.set_alpn_protocols(["http/1.1"])
    return context


def tls_extension(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> dict[str, Any]:
    """The ASGI TLS extension for one connection."""
    der = ssl_object.getpeercert(binary_form=True)
    cipher = ssl_object.cipher()
    version = ssl_object.version()
    return {
        "server_cert": None,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(version or ""),
        "cipher_suite": None if cipher is None else cipher[0],
        # Not in the ASGI spec: RFC 5929's tls-unique, for EST's channel binding. It is
        # defined for TLS 1.2 only; Python's ssl has no exporter for TLS 1.3's.
        "tls_unique": ssl_object.get_channel_binding("tls-unique")
        if version == "TLSv1.2"
        else None,
    }


class PeerCertificateProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus the ASGI TLS extension in every scope."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return
        extension = tls_extension(ssl_object)
        inner: ASGIApp = self.app

        async def app_with_tls(scope: Scope, receive: Any, send: Any) -> None:
            scope.setdefault("extensions", {})["tls"] = extension
            await inner(scope, receive, send)

        self.app = app_with_tls
