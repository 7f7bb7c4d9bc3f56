"""One TLS handshake in memory, each side's CPU: what does a fresh connection cost?

    .venv/bin/python -m bench.handshake [--count 1000] [--rounds 3]

Runs full TLS 1.3 handshakes between imprint's server context
(:func:`imprint.tls.server_ssl_context`) and a client like the load generator's (a
device's P-256 leaf and its manufacturer CA, trusting imprint's server chain), over
memory BIOs in one thread, and counts the thread's CPU time in the server's
``do_handshake`` calls and in the client's apart: each side's CPU a handshake, without
sockets, the event loop or HTTP. Three server contexts, alternated round by round:

``client certificate``         imprint's: asks for one, resumes no session (step 33)
``client certificate, resumable``  the same with OpenSSL's default session tickets
``no client certificate``      ``server.client_certificates: none``

It prints the median of the rounds for each, in µs, the client's own beside it, and the
OpenSSL that ``ssl`` uses.
"""

from __future__ import annotations

import argparse
import ssl
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bench.floor import ca_certificate
from bench.load import idevid
from imprint.openssl import accept_any_client_chain
from imprint.tls import server_ssl_context

_PEM = serialization.Encoding.PEM


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _server_leaf(issuer: x509.Certificate, issuer_key: ec.EllipticCurvePrivateKey,
                 key: ec.EllipticCurvePrivateKey) -> x509.Certificate:  # fmt: skip
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(issuer_key, hashes.SHA256())
    )


def contexts(directory: Path) -> tuple[dict[str, ssl.SSLContext], ssl.SSLContext]:
    """The three server contexts above, and the device's client context."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = ca_certificate("handshake root", root_key, None, root_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _server_leaf(root, root_key, server_key)
    line_key = ec.generate_private_key(ec.SECP256R1())
    line = ca_certificate("handshake line", line_key, root, root_key)
    device, device_key = idevid("handshake-device", line, line_key)
    files = {
        "server.crt": server.public_bytes(_PEM) + root.public_bytes(_PEM),
        "server.key": _key_pem(server_key),
        "root.crt": root.public_bytes(_PEM),
        "device.crt": device.public_bytes(_PEM) + line.public_bytes(_PEM),
        "device.key": _key_pem(device_key),
    }
    for name, data in files.items():
        (directory / name).write_bytes(data)
    cert, key = directory / "server.crt", directory / "server.key"
    resumable = server_ssl_context(certfile=cert, keyfile=key, client_certificates=False)
    accept_any_client_chain(resumable)
    servers = {
        "client certificate": server_ssl_context(
            certfile=cert, keyfile=key, client_certificates=True
        ),
        "client certificate, resumable": resumable,
        "no client certificate": server_ssl_context(
            certfile=cert, keyfile=key, client_certificates=False
        ),
    }
    client = ssl.create_default_context(cafile=str(directory / "root.crt"))
    client.minimum_version = ssl.TLSVersion.TLSv1_3
    client.load_cert_chain(directory / "device.crt", directory / "device.key")
    return servers, client


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> tuple[float, float]:
    """CPU seconds the server's and the client's sides of one full handshake took (their
    ``do_handshake`` calls; the server's include the session tickets it sends after the
    handshake, the client's its check of the server's chain)."""
    to_server, from_server = ssl.MemoryBIO(), ssl.MemoryBIO()
    to_client, from_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_side = server.wrap_bio(to_server, from_server, server_side=True)
    client_side = client.wrap_bio(to_client, from_client, server_hostname="localhost")
    spent = {id(client_side): 0.0, id(server_side): 0.0}
    steps: list[tuple[ssl.SSLObject, Callable[[], int]]] = [
        (client_side, lambda: to_server.write(from_client.read())),
        (server_side, lambda: to_client.write(from_server.read())),
    ]
    done = {id(client_side): False, id(server_side): False}
    for _ in range(8):
        for side, carry in steps:
            if not done[id(side)]:
                start = time.thread_time()
                try:
                    side.do_handshake()
                    done[id(side)] = True
                except ssl.SSLWantReadError:
                    pass
                spent[id(side)] += time.thread_time() - start
            carry()
        if all(done.values()):
            break
    if not all(done.values()):
        raise RuntimeError("the handshake did not finish")
    return spent[id(server_side)], spent[id(client_side)]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="handshakes a round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-handshake-") as directory:
        servers, client = contexts(Path(directory))
        for server in servers.values():  # warm up
            for _ in range(50):
                handshake(server, client)
        spent: dict[str, list[float]] = {name: [] for name in servers}
        clients: dict[str, list[float]] = {name: [] for name in servers}
        for _ in range(args.rounds):
            for name, server in servers.items():
                times = [handshake(server, client) for _ in range(args.count)]
                spent[name].append(sum(s for s, _ in times) / args.count * 1e6)
                clients[name].append(sum(c for _, c in times) / args.count * 1e6)
    print(f"{ssl.OPENSSL_VERSION}; {args.count} handshakes x {args.rounds} rounds")
    for name, values in spent.items():
        rounds = " / ".join(f"{v:.0f}" for v in values)
        server_side, client_side = statistics.median(values), statistics.median(clients[name])
        print(f"{name:31} {server_side:6.0f} µs  ({rounds}); the client {client_side:.0f} µs")


if __name__ == "__main__":
    main()
