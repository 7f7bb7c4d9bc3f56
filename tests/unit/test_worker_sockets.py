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
        # The kernel spreads connections over all three: of 64, each gets some (that one
        # gets none by chance is about 2 in 10^11).
        port = ports.pop()
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(64)]
        try:
            taken = []
            for sock in sockets:
                sock.setblocking(False)
                count = 0
                while True:
                    try:
                        accepted, _ = sock.accept()
                    except BlockingIOError:
                        break
                    accepted.close()
                    count += 1
                taken.append(count)
        finally:
            for client in clients:
                client.close()
        assert sum(taken) == 64
        assert min(taken) >= 1, taken
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.parametrize(
    "options",
    [(), (socket.SO_REUSEPORT,), (socket.SO_REUSEADDR, socket.SO_REUSEPORT)],
    ids=["plain", "SO_REUSEPORT", "as imprint's"],
)
def test_a_port_another_server_listens_on_is_refused(options: tuple[int, ...]) -> None:
    # Another server, even one whose socket shares its port (another imprint with
    # workers): joining its sockets would take half of its connections.
    with socket.socket() as other:
        for option in options:
            other.setsockopt(socket.SOL_SOCKET, option, 1)
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        with pytest.raises(OSError, match="Address already in use"):
            bind_sockets("127.0.0.1", other.getsockname()[1], 2)
