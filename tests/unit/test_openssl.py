"""The OpenSSL settings ``ssl`` has no method for, read back from the ``SSL_CTX``."""

from __future__ import annotations

import ssl

from imprint.openssl import _lib, _ssl_ctx, no_session_resumption

_SSL_CTRL_GET_SESS_CACHE_MODE = 45
_SSL_SESS_CACHE_SERVER = 2


def cache_mode(context: ssl.SSLContext) -> int:
    return int(_lib().SSL_CTX_ctrl(_ssl_ctx(context), _SSL_CTRL_GET_SESS_CACHE_MODE, 0, None))


def test_a_server_context_keeps_sessions_until_told_not_to() -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    assert cache_mode(context) == _SSL_SESS_CACHE_SERVER
    assert context.num_tickets == 2
    assert not context.options & ssl.OP_NO_TICKET

    no_session_resumption(context)

    assert cache_mode(context) == 0  # SSL_SESS_CACHE_OFF
    assert context.num_tickets == 0
    assert context.options & ssl.OP_NO_TICKET
