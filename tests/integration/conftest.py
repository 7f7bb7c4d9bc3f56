"""A real imprint HTTPS server on 127.0.0.1, run in a thread for each test that wants one."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from imprint.pki.authority import IssuanceRequest
from imprint.runtime import Runtime, prepare
from imprint.server import build_server
from imprint.settings import Settings
from imprint.tenancy.access import cli_principal
from tests.stopping import stop_in_background


class ServerClock:
    """The system's time, moved forward when a test says so: a test that needs something
    to expire advances the server's clock instead of sleeping."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, delta: timedelta) -> None:
        self.offset += delta


@dataclass
class Service:
    """A running server and what a test needs to talk to it."""

    runtime: Runtime
    base_url: str
    admin_token: str
    root_cert: Path
    workdir: Path
    clock: ServerClock

    def client(self, cert: tuple[Path, Path] | None = None, **kwargs: object) -> httpx.Client:
        """An HTTPS client trusting our root; ``cert`` = (certificate chain, key) for mTLS."""
        context = ssl.create_default_context(cafile=str(self.root_cert))
        if cert is not None:
            context.load_cert_chain(str(cert[0]), str(cert[1]))
        return httpx.Client(base_url=self.base_url, verify=context, timeout=10, **kwargs)  # type: ignore[arg-type]

    def admin(self) -> httpx.Client:
        return self.client(headers={"Authorization": f"Bearer {self.admin_token}"})

    def device_credentials(self, name: str, profile: str = "device") -> tuple[Path, Path]:
        """Issue a certificate from our CA and write (chain, key) files."""
        key = ec.generate_private_key(ec.SECP256R1())
        issued = self.runtime.authority.issue(
            IssuanceRequest(public_key=key.public_key(), profile=profile, common_name=name)
        )
        return write_credentials(self.workdir, name, issued.chain_pem(), key)


def with_orgs(service: Service, *org_ids: str) -> Service:
    """Create the top-level organizations ``org_ids`` that do not exist yet (enrollments
    name an existing owner), as the command line would."""
    for org_id in org_ids:
        if org_id not in service.runtime.org_tree():
            service.runtime.app.organizations.create(
                cli_principal(), f"Org {org_id}", org_id=org_id
            )
    return service


def ensure_org(admin: httpx.Client, org_id: str) -> None:
    """The top-level organization ``org_id``, made through the API unless it exists."""
    made = admin.post("/api/v1/orgs", json={"id": org_id, "name": f"Org {org_id}"})
    assert made.status_code in (201, 409), made.text


def write_credentials(
    directory: Path, name: str, chain_pem: str, key: ec.EllipticCurvePrivateKey
) -> tuple[Path, Path]:
    cert_path = directory / f"{name}.pem"
    key_path = directory / f"{name}-key.pem"
    cert_path.write_text(chain_pem)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def foreign_credentials(directory: Path, name: str) -> tuple[Path, Path]:
    """A client certificate from a CA imprint has never heard of."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Some Other CA")])
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return write_credentials(
        directory, name, leaf.public_bytes(serialization.Encoding.PEM).decode(), key
    )


def start_service(
    settings: Settings,
    workdir: Path,
    sock: socket.socket | None = None,
    *,
    stop_in_the_background: bool = False,
) -> Iterator[Service]:
    """Prepare the runtime, bind a free port, serve in a thread; stop on exit.

    With ``sock`` (bound beforehand, e.g. because its URL had to be known first), serve
    on it with ``settings`` as they are. With ``stop_in_the_background``, the exit only
    asks the server to stop and returns (``tests/stopping.py``): for a server nothing
    else will use after its test.
    """
    if sock is None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        settings = settings.model_copy(
            update={"server": settings.server.model_copy(update={"port": port})}
        )
        base_url = f"https://127.0.0.1:{port}"
    else:
        base_url = settings.server.base_url()
    clock = ServerClock()
    runtime, first = prepare(settings, clock=clock)
    # A data directory restored from a backup has its admin token file already.
    token_file = first.admin_token_file or settings.data_dir / "admin-token"
    server = build_server(runtime)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive(), "server thread died during start-up"
        assert time.monotonic() < deadline, "server did not start within 10 s"
        time.sleep(0.02)
    try:
        yield Service(
            runtime=runtime,
            base_url=base_url,
            admin_token=token_file.read_text().strip(),
            root_cert=runtime.root_certfile,
            workdir=workdir,
            clock=clock,
        )
    finally:

        def stop() -> None:
            server.should_exit = True
            thread.join(timeout=10)
            sock.close()
            runtime.close()
            assert not thread.is_alive(), "the server did not stop within 10 s"

        if stop_in_the_background:
            stop_in_background(stop)
        else:
            stop()


@pytest.fixture
def service(settings: Settings, tmp_path: Path) -> Iterator[Service]:
    """imprint serving HTTPS on a free port, on the backend of ``settings``."""
    yield from start_service(settings, tmp_path, stop_in_the_background=True)
