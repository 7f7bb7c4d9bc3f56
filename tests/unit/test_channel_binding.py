"""The connection's channel binding, worked out when EST first asks for it: real TLS
connections, both ends in memory, imprint's server context on one side."""

from __future__ import annotations

import contextlib
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from imprint import channel_binding
from imprint.channel_binding import ChannelBinding
from imprint.tls import server_ssl_context, tls_extension


def _contexts(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
        .sign(key, hashes.SHA256())
    )
    cert, key_file = directory / "server.crt", directory / "server.key"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = server_ssl_context(certfile=cert, keyfile=key_file, client_certificates=False)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client


def _connect(
    server: ssl.SSLContext, client: ssl.SSLContext, version: ssl.TLSVersion
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """A finished handshake of ``version``: (the server's end, the client's end)."""
    client.minimum_version = client.maximum_version = version
    to_server, from_server = ssl.MemoryBIO(), ssl.MemoryBIO()
    to_client, from_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_end = server.wrap_bio(to_server, from_server, server_side=True)
    client_end = client.wrap_bio(to_client, from_client, server_hostname="localhost")
    for _ in range(8):
        with contextlib.suppress(ssl.SSLWantReadError):
            client_end.do_handshake()
        to_server.write(from_client.read())
        with contextlib.suppress(ssl.SSLWantReadError):
            server_end.do_handshake()
        to_client.write(from_server.read())
    assert server_end.version() == client_end.version()
    return server_end, client_end


@pytest.fixture
def exports(monkeypatch: pytest.MonkeyPatch) -> list[ssl.SSLObject]:
    """The connections ``tls_exporter`` was called for (it still runs)."""
    called: list[ssl.SSLObject] = []
    real = channel_binding.tls_exporter

    def counted(ssl_object: ssl.SSLObject) -> bytes | None:
        called.append(ssl_object)
        return real(ssl_object)

    monkeypatch.setattr(channel_binding, "tls_exporter", counted)
    return called


def test_tls_1_3_binding_is_the_exporter_both_ends_share_worked_out_once(
    tmp_path: Path, exports: list[ssl.SSLObject]
) -> None:
    server_end, client_end = _connect(*_contexts(tmp_path), ssl.TLSVersion.TLSv1_3)
    binding = tls_extension(server_end)["channel_binding"]
    assert isinstance(binding, ChannelBinding)
    assert exports == []  # a connection EST never serves is not asked
    value = binding.value()
    assert value is not None
    assert len(value) == 32
    assert value == channel_binding.tls_exporter(client_end)  # RFC 9266: both ends agree
    assert binding.value() == value
    assert exports == [server_end, client_end]  # the server's end asked once


def test_tls_1_2_binding_is_tls_unique(tmp_path: Path, exports: list[ssl.SSLObject]) -> None:
    server_end, client_end = _connect(*_contexts(tmp_path), ssl.TLSVersion.TLSv1_2)
    binding = tls_extension(server_end)["channel_binding"]
    assert isinstance(binding, ChannelBinding)
    assert binding.value() == client_end.get_channel_binding("tls-unique")
    assert exports == []  # no exporter on TLS 1.2
    assert channel_binding.tls_exporter(server_end) is None


def test_another_connections_binding_differs(tmp_path: Path) -> None:
    contexts = _contexts(tmp_path)
    one, _ = _connect(*contexts, ssl.TLSVersion.TLSv1_3)
    other, _ = _connect(*contexts, ssl.TLSVersion.TLSv1_3)
    assert ChannelBinding(one).value() != ChannelBinding(other).value()
