"""The OpenSSL settings Python 3.11's ``ssl`` module has no method for.

1. **Key-exchange groups.** ``SSLContext.set_ecdh_curve`` sets a single curve; OpenSSL's
   ``SSL_CTX_set1_groups_list`` takes the whole list (X25519, P-256, P-384).
2. **Accepting any client chain in the handshake.** ``ssl`` has no verify callback: in
   ``CERT_OPTIONAL`` mode a client certificate that OpenSSL cannot verify aborts the
   handshake, and the client sees an empty reply. ``SSL_CTX_set_cert_verify_callback``
   replaces OpenSSL's chain verification with one that accepts; the application then
   verifies the chain (:mod:`imprint.attestation.peer_chain`) and can answer a refusal
   over HTTP. The handshake still proves that the client holds the key of the leaf
   certificate (TLS CertificateVerify); only the path checks move to the application.
3. **No server-side session cache.** ``ssl`` can stop TLS 1.3 tickets
   (``num_tickets``) and TLS 1.2 tickets (``OP_NO_TICKET``) but not TLS 1.2's
   resumption by session id, which ``SSL_CTX_set_session_cache_mode`` turns off.

All three reach the ``SSL_CTX`` behind an :class:`ssl.SSLContext` through ``ctypes``, calling
the same libssl that the ``_ssl`` module is linked against. CPython lays out its context
object as ``{PyObject_HEAD; SSL_CTX *ctx; ...}`` (unchanged from 3.7 to 3.13); the pointer
is checked before use by asking OpenSSL for the context's options and comparing them with
what ``ssl`` reports, so a layout change fails loudly at start instead of corrupting
memory.
"""

from __future__ import annotations

import _ssl
import ctypes
import ssl
import threading

__all__ = ["OpenSSLUnavailable", "accept_any_client_chain", "no_session_resumption", "set_groups"]

_SSL_CTRL_SET_GROUPS_LIST = 92
_SSL_CTRL_SET_SESS_CACHE_MODE = 44
_SSL_CTRL_GET_SESS_CACHE_MODE = 45
_SSL_SESS_CACHE_OFF = 0


class OpenSSLUnavailable(RuntimeError):
    """The OpenSSL functions cannot be reached from this Python."""


_VerifyCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


def _accept_chain(_store: int | None, _arg: int | None) -> int:
    return 1


#: Kept for the life of the process: OpenSSL holds a pointer to it.
_accept = _VerifyCallback(_accept_chain)


_lock = threading.Lock()
_libssl: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libssl
    with _lock:
        if _libssl is None:
            try:
                lib = ctypes.CDLL(_ssl.__file__)
                lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
                lib.SSL_CTX_get_options.restype = ctypes.c_uint64
                lib.SSL_CTX_ctrl.argtypes = [
                    ctypes.c_void_p,
                    ctypes.c_int,
                    ctypes.c_long,
                    ctypes.c_void_p,
                ]
                lib.SSL_CTX_ctrl.restype = ctypes.c_long
                lib.SSL_CTX_set_cert_verify_callback.argtypes = [
                    ctypes.c_void_p,
                    _VerifyCallback,
                    ctypes.c_void_p,
                ]
                lib.SSL_CTX_set_cert_verify_callback.restype = None
            except (OSError, AttributeError) as exc:
                raise OpenSSLUnavailable(f"libssl is not reachable through ctypes: {exc}") from exc
            _libssl = lib
        return _libssl


def _ssl_ctx(context: ssl.SSLContext) -> int:
    """The ``SSL_CTX *`` behind ``context``, checked against the options ``ssl`` reports."""
    lib = _lib()
    pointer = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    if not pointer or lib.SSL_CTX_get_options(pointer) != int(context.options):
        raise OpenSSLUnavailable("cannot find the SSL_CTX of an ssl.SSLContext in this Python")
    return pointer


def set_groups(context: ssl.SSLContext, groups: list[str]) -> None:
    """Offer exactly these key-exchange groups (OpenSSL names: X25519, P-256, P-384).

    Raises:
        OpenSSLUnavailable: OpenSSL cannot be reached.
        ValueError: OpenSSL does not know one of the groups.
    """
    joined = ":".join(groups).encode("ascii")
    if _lib().SSL_CTX_ctrl(_ssl_ctx(context), _SSL_CTRL_SET_GROUPS_LIST, 0, joined) != 1:
        raise ValueError(f"OpenSSL refuses the group list {':'.join(groups)!r}")


def accept_any_client_chain(context: ssl.SSLContext) -> None:
    """Ask clients for a certificate, and let any chain (or none) through the handshake.

    The peer's chain as sent is then available from the connection
    (:func:`imprint.tls.presented_chain`); nothing about it has been verified but the
    client's possession of the leaf's key.

    Raises:
        OpenSSLUnavailable: OpenSSL cannot be reached.
    """
    context.verify_mode = ssl.CERT_OPTIONAL
    _lib().SSL_CTX_set_cert_verify_callback(_ssl_ctx(context), _accept, None)


def no_session_resumption(context: ssl.SSLContext) -> None:
    """Make every connection a full handshake: no TLS 1.3 or 1.2 session tickets, and no
    TLS 1.2 session cache.

    A session resumed from a ticket carries no certificate chain: the client sends none,
    and the ticket holds only the leaf, so the chain the application verifies would be
    missing. Without the cache, a session id offered by a client is not resumed either.

    Raises:
        OpenSSLUnavailable: OpenSSL cannot be reached, or keeps its session cache on.
    """
    context.num_tickets = 0
    context.options |= ssl.OP_NO_TICKET
    lib, ctx = _lib(), _ssl_ctx(context)
    lib.SSL_CTX_ctrl(ctx, _SSL_CTRL_SET_SESS_CACHE_MODE, _SSL_SESS_CACHE_OFF, None)
    if lib.SSL_CTX_ctrl(ctx, _SSL_CTRL_GET_SESS_CACHE_MODE, 0, None) != _SSL_SESS_CACHE_OFF:
        raise OpenSSLUnavailable("OpenSSL keeps its session cache on")
