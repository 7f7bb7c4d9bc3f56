"""TLS for the HTTPS server, and the client certificate chain handed to the application.

**The profile** is Mozilla's "intermediate" one: TLS 1.3, and TLS 1.2 with ECDHE key
exchange and AEAD ciphers only (AES-GCM, ChaCha20-Poly1305), over the groups X25519,
P-256 and P-384 (set through :func:`imprint.openssl.set_groups`, which ``ssl`` lacks).
TLS 1.3's own cipher suites are all AEAD; OpenSSL's defaults are kept.

**Client certificates are the application's decision.** The handshake asks for one
(``server.client_certificates: optional``) and lets any chain, or none, through
(:func:`imprint.openssl.accept_any_client_chain`); it only proves that the client holds
the leaf's key. :class:`PeerCertificateProtocol` reads the chain as the client sent it,
once per connection, and adds it to every request's scope as the ASGI TLS extension::

    scope["extensions"]["tls"] = {"client_cert_chain": [PEM leaf, PEM intermediate, ...], ...}

**Every handshake is a full one** while client certificates are asked for: a session
resumed from a ticket (TLS 1.3 or 1.2) carries no chain, so a device that resumed would
look like one without a certificate. Not resuming also spares the server the two session
tickets OpenSSL issues after each TLS 1.3 handshake; each holds the session, the client's
certificate included, and with one they cost OpenSSL 3.0 about a third of the handshake
(bench/README.md, step 33).

Nothing in it is verified: routes reach it only through
:func:`imprint.api.identity.peer_certificate`, which verifies the chain and refuses a bad
one with a specific problem code (docs/security.md).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from imprint.channel_binding import ChannelBinding
from imprint.openssl import accept_any_client_chain, no_session_resumption, set_groups

__all__ = [
    "CIPHERS_TLS12",
    "GROUPS",
    "MAX_CLIENT_CHAIN",
    "PeerCertificateProtocol",
    "presented_chain",
    "server_ssl_context",
]

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}

#: TLS 1.2 suites: ECDHE key exchange, AEAD ciphers (Mozilla "intermediate", without DHE).
CIPHERS_TLS12 = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)
#: Key-exchange groups, most preferred first.
GROUPS = ["X25519", "P-256", "P-384"]
#: Certificates of a client chain the application looks at (leaf included).
MAX_CLIENT_CHAIN = 8


def server_ssl_context(
    *, certfile: Path, keyfile: Path, client_certificates: bool
) -> ssl.SSLContext:
    """The server's TLS context (the profile above).

    With ``client_certificates``, the handshake asks for a client certificate and lets
    any chain through, for the application to judge, and no session is resumed (one
    resumed from a ticket has no chain to judge); without, it asks for none.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.set_ciphers(CIPHERS_TLS12)
    set_groups(context, GROUPS)
    context.load_cert_chain(certfile, keyfile)
    if client_certificates:
        accept_any_client_chain(context)
        no_session_resumption(context)
    context.set_alpn_protocols(["http/1.1"])
    return context


def presented_chain(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> list[str]:
    """The client's certificate chain as it sent it, leaf first, in PEM (at most
    :data:`MAX_CLIENT_CHAIN` certificates); empty without a client certificate."""
    inner = getattr(ssl_object, "_sslobj", None)
    unverified = getattr(inner, "get_unverified_chain", None)
    if unverified is not None:
        chain = [c for c in unverified() or [] if c is not None]  # [None]: no certificate
        return [c.public_bytes() for c in chain[:MAX_CLIENT_CHAIN]]
    der = ssl_object.getpeercert(binary_form=True)
    return [ssl.DER_cert_to_PEM_cert(der)] if der else []


def tls_extension(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> dict[str, Any]:
    """The ASGI TLS extension for one connection."""
    cipher = ssl_object.cipher()
    version = ssl_object.version()
    return {
        "server_cert": None,
        "client_cert_chain": presented_chain(ssl_object),
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(version or ""),
        "cipher_suite": None if cipher is None else cipher[0],
        # Not in the ASGI spec: the channel binding, for EST, worked out if EST asks.
        # RFC 5929's tls-unique is defined for TLS 1.2 only, RFC 9266's tls-exporter for
        # TLS 1.3.
        "channel_binding": ChannelBinding(ssl_object),
    }


class PeerCertificateProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus the ASGI TLS extension (the client's chain as
    sent, unverified) in every scope."""

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
