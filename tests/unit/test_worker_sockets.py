"""The listening sockets of `imprint serve` with several workers (`server.bind_sockets`):
one a worker on one port, and a port something else listens on refused."""

from __future__ import annotations

import socket

import pytest

from imprint.server import bind_sockets


def test_each_worker_gets_a_socket_of_its_own_on_one_port() -> None:
    sockets = bind_sockets("127.0.0.1", 0, 3)
    try:
        ports = {sock.getsockname()[1] for sock in sockets}
        assert len(sockets) == 3
        assert len(ports) == 1
        assert all(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for sock in sockets)
        assert all(sock.get_inheritable() for sock in sockets)
        # All three accept: a connection to the port reaches one of them.
        with socket.create_connection(("127.0.0.1", ports.pop()), timeout=5):
            pass
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.parametrize("shared", [False, True], ids=["plain", "SO_REUSEPORT"])
def test_a_port_another_server_listens_on_is_refused(shared: bool) -> None:
    # Another server, even one whose socket shares its port (another imprint with
    # workers): joining its sockets would take half of its connections.
    with socket.socket() as other:
        if shared:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        with pytest.raises(OSError, match="Address already in use"):
            bind_sockets("127.0.0.1", other.getsockname()[1], 2)
