"""The "Python ceiling": the least a Python CSR signer can do per certificate.

A raw ASGI application on uvicorn (the same server, TLS and event loop imprint runs on),
with no framework: ``POST /sign`` with ``{"csr": PEM}`` parses and verifies the CSR,
signs a P-256 leaf with the same extensions imprint's device profile gives (client
auth, 90 days), inserts one row per certificate into SQLite (serial, subject, DER, one
commit, WAL) and answers ``{"certificate": PEM}``. Not part of the product: it is the
yardstick ``make bench`` runs beside imprint and ``cfssl serve``, so imprint's CPU per
certificate reads as a multiple of what any Python signer on this stack must spend.

``python -m bench.ceiling DIRECTORY PORT`` writes its CA, TLS certificate and database
into DIRECTORY and serves on 127.0.0.1:PORT over TLS.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sqlite3
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Message = MutableMapping[str, Any]


class Signer:
    """The CA key and the certificate table."""

    def __init__(self, directory: Path) -> None:
        now = datetime.now(UTC)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ceiling bench CA")])
        self.ca = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.ski = x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key())
        self.db = sqlite3.connect(directory / "certificates.db", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS certificates"
            " (serial TEXT PRIMARY KEY, subject TEXT NOT NULL, der BLOB NOT NULL,"
            " issued_at TEXT NOT NULL)"
        )

    def sign(self, pem: bytes) -> bytes:
        csr = x509.load_pem_x509_csr(pem)
        if not csr.is_signature_valid:
            raise ValueError("bad CSR signature")
        now = datetime.now(UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(self.name)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=90))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False), True
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .add_extension(self.ski, False)
            .sign(self.key, hashes.SHA256())
        )
        der = certificate.public_bytes(serialization.Encoding.DER)
        self.db.execute(
            "INSERT INTO certificates VALUES (?, ?, ?, ?)",
            (format(certificate.serial_number, "x"), csr.subject.rfc4514_string(), der,
             now.isoformat()),
        )  # fmt: skip
        return certificate.public_bytes(serialization.Encoding.PEM)


def application(signer: Signer) -> Callable[..., Awaitable[None]]:
    async def app(
        scope: Message, receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:  # fmt: skip
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        status, answer = 404, b'{"error": "not found"}'
        if scope["path"] == "/sign" and scope["method"] == "POST":
            try:
                pem = signer.sign(json.loads(body)["csr"].encode())
                status, answer = 200, json.dumps({"certificate": pem.decode()}).encode()
            except (ValueError, KeyError, TypeError) as exc:
                status, answer = 400, json.dumps({"error": str(exc)}).encode()
        elif scope["path"] == "/health":
            status, answer = 200, b"{}"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})  # fmt: skip
        await send({"type": "http.response.body", "body": answer})

    return app


def tls_files(signer: Signer, directory: Path) -> tuple[Path, Path, Path]:
    """A server certificate for 127.0.0.1 from the signer's CA: (ca, cert, key)."""
    now = datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(signer.name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            False,
        )
        .sign(signer.key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = directory / "ca.pem", directory / "tls.pem", directory / "tls-key.pem"
    paths[0].write_bytes(signer.ca.public_bytes(pem))
    paths[1].write_bytes(certificate.public_bytes(pem))
    paths[2].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


def main() -> None:
    import uvicorn

    directory, port = Path(sys.argv[1]), int(sys.argv[2])
    directory.mkdir(parents=True, exist_ok=True)
    signer = Signer(directory)
    _, cert, key = tls_files(signer, directory)
    uvicorn.run(
        application(signer),
        host="127.0.0.1",
        port=port,
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
