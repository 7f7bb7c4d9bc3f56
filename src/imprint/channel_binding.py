"""TLS 1.3 channel binding (``tls-exporter``, RFC 9266), which Python's ``ssl`` lacks.

``ssl.SSLObject.get_channel_binding`` knows ``tls-unique`` only, which TLS 1.3 does not
define. RFC 9266's ``tls-exporter`` is 32 bytes from the TLS keying-material exporter
(``SSL_export_keying_material``) with the label ``EXPORTER-Channel-Binding`` and no
context. As :mod:`imprint.openssl` does for the ``SSL_CTX``, this reaches the ``SSL *``
of a connection through ``ctypes`` and calls the libssl the ``_ssl`` module is linked
against. CPython lays out its socket object as ``{PyObject_HEAD; PyObject *Socket; SSL
*ssl; ...}`` (3.7 to 3.13); the pointer is used only after OpenSSL confirms it belongs to
the connection's own ``SSL_CTX`` and speaks the TLS version ``ssl`` reports, so a layout
change yields no binding (and a log line), never a wrong one.

Only EST reads a binding, so a connection carries a :class:`ChannelBinding` that works
its value out when first asked, on the event loop's thread as every other use of the
connection's ``SSL *`` (10-11 µs for every TLS 1.3 connection otherwise, 1.2 % of a
fresh-mTLS registration's profile: bench/README.md, step 45).
"""

from __future__ import annotations

import _ssl
import ctypes
import ssl
import threading

from imprint.logs import get_logger

__all__ = ["EXPORTER_LABEL", "ChannelBinding", "tls_exporter"]

EXPORTER_LABEL = b"EXPORTER-Channel-Binding"
_LENGTH = 32
_TLS1_3_VERSION = 0x0304
_POINTER = ctypes.sizeof(ctypes.c_void_p)

log = get_logger(__name__)
_lock = threading.Lock()
_libssl: ctypes.CDLL | None = None
_broken = False


def _lib() -> ctypes.CDLL:
    global _libssl
    with _lock:
        if _libssl is None:
            lib = ctypes.CDLL(_ssl.__file__)
            lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
            lib.SSL_CTX_get_options.restype = ctypes.c_uint64
            lib.SSL_get_SSL_CTX.argtypes = [ctypes.c_void_p]
            lib.SSL_get_SSL_CTX.restype = ctypes.c_void_p
            lib.SSL_version.argtypes = [ctypes.c_void_p]
            lib.SSL_version.restype = ctypes.c_int
            lib.SSL_export_keying_material.argtypes = [
                ctypes.c_void_p,
                ctypes.c_char_p,
                ctypes.c_size_t,
                ctypes.c_char_p,
                ctypes.c_size_t,
                ctypes.c_char_p,
                ctypes.c_size_t,
                ctypes.c_int,
            ]
            lib.SSL_export_keying_material.restype = ctypes.c_int
            _libssl = lib
        return _libssl


def _pointer_at(address: int) -> int | None:
    return ctypes.c_void_p.from_address(address).value


def tls_exporter(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> bytes | None:
    """The connection's RFC 9266 ``tls-exporter`` value on TLS 1.3, else None (TLS 1.2,
    or libssl unreachable from this Python)."""
    global _broken
    if _broken or ssl_object.version() != "TLSv1.3":
        return None
    inner = getattr(ssl_object, "_sslobj", None)
    context = ssl_object.context
    if inner is None:
        return None
    try:
        lib = _lib()
        ctx = _pointer_at(id(context) + object.__basicsize__)
        if not ctx or lib.SSL_CTX_get_options(ctx) != int(context.options):
            raise OSError("no SSL_CTX behind the SSLContext")
        connection = _pointer_at(id(inner) + object.__basicsize__ + _POINTER)
        if not connection or lib.SSL_get_SSL_CTX(connection) != ctx:
            raise OSError("no SSL behind the SSL object")
        if lib.SSL_version(connection) != _TLS1_3_VERSION:
            raise OSError("the SSL object is not the TLS 1.3 connection")
        out = ctypes.create_string_buffer(_LENGTH)
        done = lib.SSL_export_keying_material(
            connection, out, _LENGTH, EXPORTER_LABEL, len(EXPORTER_LABEL), None, 0, 0
        )
    except (OSError, AttributeError) as exc:
        _broken = True
        log.warning("tls_exporter_unavailable", reason=str(exc))
        return None
    return out.raw if done == 1 else None


class ChannelBinding:
    """A connection's channel binding, worked out when first asked for: ``tls-unique``
    on TLS 1.2, ``tls-exporter`` on TLS 1.3, None otherwise (or without libssl). Ask on
    the thread that serves the connection (the event loop's)."""

    __slots__ = ("_ssl_object", "_value")

    def __init__(self, ssl_object: ssl.SSLObject | ssl.SSLSocket) -> None:
        self._ssl_object: ssl.SSLObject | ssl.SSLSocket | None = ssl_object
        self._value: bytes | None = None

    def value(self) -> bytes | None:
        ssl_object = self._ssl_object
        if ssl_object is not None:  # the first call: the connection is let go of after it
            if ssl_object.version() == "TLSv1.2":
                self._value = ssl_object.get_channel_binding("tls-unique")
            else:
                self._value = tls_exporter(ssl_object)
            self._ssl_object = None
        return self._value
