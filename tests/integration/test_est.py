"""EST (RFC 7030) against the real HTTPS server, driven by real clients: strongSwan's
``pki --estca``/``pki --est``, and ``curl`` plus ``openssl`` sending what RFC 7030's
examples send. Refusals are checked to change nothing and to answer the RFC's status."""

from __future__ import annotations

import base64
import email
import hashlib
import http.client
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import AttributeOID, ExtendedKeyUsageOID, NameOID
from typer.testing import CliRunner

from imprint.audit import AuditQuery
from imprint.provisioning.devices import DeviceStatus
from imprint.settings import Settings
from tests.conftest import CA_PASSPHRASE
from tests.integration.conftest import Service, start_service, with_orgs, write_credentials


@pytest.fixture
def service(service: Service) -> Service:
    """The server, with the organization this module's enrollments name."""
    return with_orgs(service, "acme")


SECRET = "printed-on-the-box-42"
ENROLLMENT = "est-lab"
pytestmark = pytest.mark.skipif(shutil.which("pki") is None, reason="strongswan-pki missing")


def run(
    *args: str | Path, cwd: Path, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, input=stdin, capture_output=True, timeout=60
    )


def enroll_oob(service: Service, **fields: Any) -> None:
    body = {
        "mechanism": "oob-secret",
        "owner": "acme",
        "id": ENROLLMENT,
        "key_types": ["ec-p256", "rsa-2048", "rsa-3072"],
        **fields,
    }
    with service.admin() as client:
        response = client.post("/api/v1/enrollments", json=body)
        assert response.status_code == 201, response.text


def register(service: Service, device_id: str, secret: str = SECRET) -> None:
    with service.admin() as client:
        response = client.post(
            f"/api/v1/enrollments/{ENROLLMENT}/oob-secrets",
            json={"device_id": device_id, "secret": secret},
        )
        assert response.status_code in (200, 201), response.text


def state(service: Service) -> tuple[int, int]:
    """Devices and certificate records: what a refused request must not change."""
    runtime = service.runtime
    return len(runtime.devices.search(limit=10_000)), len(runtime.ledger.search(limit=10_000))


def certificates_of(p7_base64: bytes) -> list[x509.Certificate]:
    return pkcs7.load_der_pkcs7_certificates(base64.b64decode(p7_base64))


def url(service: Service, operation: str, label: str | None = ENROLLMENT) -> str:
    middle = f"/{label}" if label else ""
    return f"{service.base_url}/.well-known/est{middle}/{operation}"


# strongSwan ------------------------------------------------------------------------------
#
# strongSwan's pki speaks EST over its own TLS stack; ECDSA needs its openssl plugin
# (Debian's libstrongswan-standard-plugins), HTTP its curl plugin (extra-plugins).


@pytest.mark.slow
def test_strongswan_enrolls_with_http_basic_and_reenrolls_with_its_certificate(
    service: Service, tmp_path: Path
) -> None:
    enroll_oob(service)
    register(service, "sw-device-1")
    base = service.base_url  # pki appends /.well-known/est/<operation>: no label
    fetched = run(
        "pki", "--estca", "--url", base, "--cacert", service.root_cert,
        "--caout", "ca.pem", "--outform", "pem", "--force", cwd=tmp_path,
    )  # fmt: skip
    assert fetched.returncode == 0, fetched.stderr.decode()
    saved = sorted(tmp_path.glob("ca*.pem"))
    got = {x509.load_pem_x509_certificate(p.read_bytes()) for p in saved}
    assert got == set(service.runtime.authority.chain), "the issuing CA and the root"
    trust = [arg for path in saved for arg in ("--cacert", str(path))]

    def key_and_request(name: str) -> str:
        key = run("pki", "--gen", "--type", "ecdsa", "--size", "256", "--outform", "pem",
                  cwd=tmp_path)  # fmt: skip
        (tmp_path / f"{name}-key.pem").write_bytes(key.stdout)
        req = run("pki", "--req", "--in", f"{name}-key.pem", "--type", "priv",
                  "--dn", "CN=sw-device-1", "--outform", "pem", cwd=tmp_path)  # fmt: skip
        assert req.returncode == 0, req.stderr.decode()
        (tmp_path / f"{name}.csr").write_bytes(req.stdout)
        return f"{name}.csr"

    pki_est = ("pki", "--est", "--url", base, *trust, "--outform", "pem")
    before = state(service)
    wrong = run(*pki_est, "--in", key_and_request("wrong"),
                "--userpass", "sw-device-1:not-the-secret", cwd=tmp_path)  # fmt: skip
    assert wrong.returncode != 0
    assert b"401" in wrong.stderr + wrong.stdout
    assert state(service) == before

    enrolled = run(*pki_est, "--in", key_and_request("first"),
                   "--userpass", f"sw-device-1:{SECRET}", cwd=tmp_path)  # fmt: skip
    assert enrolled.returncode == 0, enrolled.stderr.decode()
    first = x509.load_pem_x509_certificate(enrolled.stdout)
    assert first.subject.rfc4514_string() == "CN=sw-device-1,OU=acme"
    (tmp_path / "first.pem").write_bytes(enrolled.stdout)

    renewed = run(*pki_est, "--in", key_and_request("second"),
                  "--cert", "first.pem", "--key", "first-key.pem", cwd=tmp_path)  # fmt: skip
    assert renewed.returncode == 0, renewed.stderr.decode()
    second = x509.load_pem_x509_certificate(renewed.stdout)
    assert second.serial_number != first.serial_number
    ledger = service.runtime.ledger
    assert ledger.get(format(first.serial_number, "x")).revocation_reason == "superseded"
    device = service.runtime.devices.find("acme", "sw-device-1")
    assert device is not None
    assert device.certificate_serial == format(second.serial_number, "x")
    actions = [e.action for e in service.runtime.audit.search(AuditQuery(limit=50))]
    assert "device.provision" in actions
    assert "device.renew" in actions


# curl + openssl, as RFC 7030's examples send them ------------------------------------------


def curl(service: Service, *args: str | Path, cwd: Path) -> tuple[int, dict[str, str], bytes]:
    """curl's status, headers (lowercase names) and body."""
    result = run(
        "curl", "--silent", "--show-error", "--cacert", service.root_cert,
        "--dump-header", "headers.txt", "--output", "body.bin", *args, cwd=cwd,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    lines = (cwd / "headers.txt").read_text().splitlines()
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if value:
            headers[name.strip().lower()] = value.strip()
    return status, headers, (cwd / "body.bin").read_bytes()


def openssl_request(cwd: Path, name: str, subject: str = "/CN=ignored") -> Path:
    """An EC key and a base64 DER PKCS#10 request made by openssl: ``<name>.b64``."""
    key = cwd / f"{name}-key.pem"
    assert run("openssl", "ecparam", "-genkey", "-name", "prime256v1", "-noout",
               "-out", key, cwd=cwd).returncode == 0  # fmt: skip
    der = run("openssl", "req", "-new", "-key", key, "-subj", subject, "-outform", "DER", cwd=cwd)
    assert der.returncode == 0, der.stderr.decode()
    encoded = run("openssl", "base64", cwd=cwd, stdin=der.stdout)
    path = cwd / f"{name}.b64"
    path.write_bytes(encoded.stdout)
    return path


def print_certs(body: bytes, cwd: Path) -> list[x509.Certificate]:
    """``openssl base64 -d | openssl pkcs7 -print_certs``: what an EST client does."""
    der = run("openssl", "base64", "-d", "-A", cwd=cwd, stdin=body.replace(b"\n", b""))
    printed = run("openssl", "pkcs7", "-inform", "DER", "-print_certs", cwd=cwd, stdin=der.stdout)
    assert printed.returncode == 0, printed.stderr.decode()
    return x509.load_pem_x509_certificates(printed.stdout)


@pytest.mark.both_databases
@pytest.mark.slow
def test_every_est_operation_with_curl_and_openssl(service: Service, tmp_path: Path) -> None:
    enroll_oob(service)
    register(service, "curl-device-1")
    status, headers, body = curl(service, url(service, "cacerts"), cwd=tmp_path)
    assert status == 200
    assert headers["content-type"].startswith("application/pkcs7-mime")
    assert set(print_certs(body, tmp_path)) == set(service.runtime.authority.chain)

    status, headers, body = curl(service, url(service, "csrattrs"), cwd=tmp_path)
    assert (status, headers["content-type"]) == (200, "application/csrattrs")
    der = run("openssl", "base64", "-d", "-A", cwd=tmp_path, stdin=body)
    parsed = run("openssl", "asn1parse", "-inform", "DER", cwd=tmp_path, stdin=der.stdout)
    assert parsed.returncode == 0, parsed.stderr.decode()
    for name in (b"id-ecPublicKey", b"prime256v1", b"ecdsa-with-SHA256"):
        assert name in parsed.stdout

    request = openssl_request(tmp_path, "first")
    status, headers, body = curl(
        service, url(service, "simpleenroll"), "--user", f"curl-device-1:{SECRET}",
        "--header", "Content-Type: application/pkcs10", "--data-binary", f"@{request}",
        cwd=tmp_path,
    )  # fmt: skip
    assert status == 200, body
    assert headers["content-type"] == "application/pkcs7-mime; smime-type=certs-only"
    (first,) = print_certs(body, tmp_path)
    assert first.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "curl-device-1"
    (tmp_path / "first.pem").write_bytes(first.public_bytes(serialization.Encoding.PEM))

    again = openssl_request(tmp_path, "second")
    status, _, body = curl(
        service, url(service, "simplereenroll"), "--cert", tmp_path / "first.pem",
        "--key", tmp_path / "first-key.pem", "--header", "Content-Type: application/pkcs10",
        "--data-binary", f"@{again}", cwd=tmp_path,
    )  # fmt: skip
    assert status == 200, body
    (second,) = print_certs(body, tmp_path)
    assert second.serial_number != first.serial_number
    assert second.subject == first.subject

    # serverkeygen, authenticated with a one-time password made through the API
    with service.admin() as admin:
        made = admin.post(
            f"/api/v1/enrollments/{ENROLLMENT}/one-time-passwords",
            json={"device_id": "curl-device-2", "valid_minutes": 30},
        )
    assert made.status_code == 201, made.text
    password = made.json()["password"]
    stored = service.runtime.one_time_passwords.find(
        hashlib.sha256(password.encode()).hexdigest(), "curl-device-2", [ENROLLMENT]
    )
    assert stored is not None
    assert password not in repr(stored)
    request = openssl_request(tmp_path, "keygen", "/CN=curl-device-2")
    status, headers, body = curl(
        service, url(service, "serverkeygen"), "--user", f"curl-device-2:{password}",
        "--header", "Content-Type: application/pkcs10", "--data-binary", f"@{request}",
        cwd=tmp_path,
    )  # fmt: skip
    assert status == 200, body
    assert headers["content-type"].startswith("multipart/mixed")
    message = email.message_from_bytes(
        b"Content-Type: " + headers["content-type"].encode() + b"\r\n\r\n" + body
    )
    parts = {part.get_content_type(): part.get_payload() for part in message.get_payload()}  # type: ignore[union-attr]
    assert set(parts) == {"application/pkcs8", "application/pkcs7-mime"}
    key_der = run(
        "openssl", "base64", "-d", cwd=tmp_path, stdin=parts["application/pkcs8"].encode()
    )
    key_pem = run("openssl", "pkey", "-inform", "DER", cwd=tmp_path, stdin=key_der.stdout)
    assert key_pem.returncode == 0, key_pem.stderr.decode()
    (made_cert,) = print_certs(parts["application/pkcs7-mime"].encode(), tmp_path)
    key = serialization.load_pem_private_key(key_pem.stdout, None)
    assert made_cert.public_key() == key.public_key()
    client_key = serialization.load_pem_private_key(
        (tmp_path / "keygen-key.pem").read_bytes(), None
    )
    assert made_cert.public_key() != client_key.public_key(), "a key the server made"


@pytest.mark.slow
def test_x509_enrollment_over_mutual_tls_waits_for_approval(
    service: Service, tmp_path: Path
) -> None:
    root_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Acme Manufacturing Root")])
    root = (
        x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
        .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), False)
        .sign(root_key, hashes.SHA256())
    )  # fmt: skip
    device_key = ec.generate_private_key(ec.SECP256R1())
    idevid = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sensor-0042")]))
        .issuer_name(root_name).public_key(device_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), False
        )
        .sign(root_key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = write_credentials(
        tmp_path, "idevid", idevid.public_bytes(serialization.Encoding.PEM).decode(), device_key
    )
    body = {
        "mechanism": "x509",
        "owner": "acme",
        "id": "line-1",
        "manual_approval": True,
        "device_id_rule": "common-name",
        "x509": {"certificate_chain": [root.public_bytes(serialization.Encoding.PEM).decode()]},
    }
    with service.admin() as admin:
        assert admin.post("/api/v1/enrollments", json=body).status_code == 201
    request = openssl_request(tmp_path, "lrq")
    enroll = (
        url(service, "simpleenroll", "line-1"), "--cert", cert_file, "--key", key_file,
        "--header", "Content-Type: application/pkcs10", "--data-binary", f"@{request}",
    )  # fmt: skip
    status, headers, _ = curl(service, *enroll, cwd=tmp_path)
    assert status == 202
    assert int(headers["retry-after"]) > 0
    device = service.runtime.devices.find("acme", "sensor-0042")
    assert device is not None
    assert device.status is DeviceStatus.PENDING
    with service.admin() as admin:
        assert admin.post(f"/api/v1/devices/{device.id}/approve").status_code == 200
    status, _, body_bytes = curl(service, *enroll, cwd=tmp_path)
    assert status == 200, body_bytes
    (issued,) = print_certs(body_bytes, tmp_path)
    assert issued.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "sensor-0042"


# Refusals ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_bad_requests_change_nothing_and_get_rfc_7030_errors(
    service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imprint.cli.oob import app as oob_cli

    enroll_oob(service)
    register(service, "dev-a")
    register(service, "dev-b")
    settings = service.runtime.settings
    monkeypatch.setenv("IMPRINT_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("IMPRINT_DATABASE__URL", settings.database_url())
    monkeypatch.setenv("IMPRINT_CA__PASSPHRASE", CA_PASSPHRASE)
    made = CliRunner().invoke(oob_cli, ["otp", ENROLLMENT, "dev-c"])
    assert made.exit_code == 0, made.output
    password = made.stdout.strip().splitlines()[-1]
    enroll_url = url(service, "simpleenroll")
    pkcs10 = {"Content-Type": "application/pkcs10"}

    tls12 = ssl.create_default_context(cafile=str(service.root_cert))
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2  # tls-unique: the binding is checked

    def post(body: bytes, user: str | None, secret: str = SECRET, **headers: str) -> httpx.Response:
        auth = None if user is None else (user, secret)
        with httpx.Client(verify=tls12, timeout=10) as client:
            return client.post(enroll_url, content=body, headers=headers or pkcs10, auth=auth)

    def b64_csr(key: ec.EllipticCurvePrivateKey | None = None, **attrs: bytes) -> bytes:
        key = key or ec.generate_private_key(ec.SECP256R1())
        builder = x509.CertificateSigningRequestBuilder().subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
        )
        for value in attrs.values():
            builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, value)
        csr = builder.sign(key, hashes.SHA256())
        return base64.b64encode(csr.public_bytes(serialization.Encoding.DER))

    with service.admin() as admin:
        short = admin.post(
            f"/api/v1/enrollments/{ENROLLMENT}/one-time-passwords",
            json={"device_id": "dev-d", "valid_minutes": 1},
        ).json()["password"]
    service.clock.advance(timedelta(minutes=2))
    shared_key = ec.generate_private_key(ec.SECP256R1())
    assert post(b64_csr(shared_key), "dev-a").status_code == 200
    used = post(b64_csr(), "dev-c", password)
    assert used.status_code == 200, used.text
    before = state(service)
    audit_before = len(service.runtime.audit.search(AuditQuery(limit=1000)))
    with service.client() as client:
        renewal = client.post(url(service, "simplereenroll"), content=b64_csr(), headers=pkcs10)
    cases = {
        "garbage PKCS#10": (post(base64.b64encode(b"not a CSR"), "dev-b"), 400),
        "not base64": (post(b"%%%", "dev-b"), 400),
        "wrong content type": (post(b64_csr(), "dev-b", **{"Content-Type": "text/plain"}), 415),
        "no credentials": (post(b64_csr(), None), 401),
        "wrong password": (post(b64_csr(), "dev-b", "wrong-secret"), 401),
        "unknown device": (post(b64_csr(), "dev-z"), 401),
        "reused one-time password": (post(b64_csr(), "dev-c", password), 401),
        "expired one-time password": (post(b64_csr(), "dev-d", short), 401),
        "key of another device": (post(b64_csr(shared_key), "dev-b"), 403),
        "binding on another connection": (post(b64_csr(cp=b"bm90LXRoaXMtb25l"), "dev-b"), 400),
        "renewal without a certificate": (renewal, 401),
    }
    for case, (response, status) in cases.items():
        assert response.status_code == status, (case, response.status_code, response.text)
        assert response.headers["content-type"].startswith("text/plain"), case
        assert "Traceback" not in response.text
        if status == 401:
            assert response.headers["www-authenticate"].startswith("Basic"), case
    assert "secret_used" in cases["reused one-time password"][0].text
    assert "key_in_use" in cases["key of another device"][0].text
    assert "secret_expired" in cases["expired one-time password"][0].text
    assert state(service) == before
    audit_after = len(service.runtime.audit.search(AuditQuery(limit=1000)))
    assert audit_after == audit_before, "a refused request changes nothing, audit included"
    created = service.runtime.audit.search(AuditQuery(action="one_time_password.create"))
    assert sorted(e.target_id or "" for e in created) == ["dev-c", "dev-d"]


# Channel binding --------------------------------------------------------------------------


def _bound_enroll(
    service: Service, *, tls: ssl.TLSVersion, binding: bytes | None, user: str
) -> tuple[int, bytes]:
    """Enroll over one connection whose tls-unique goes into the CSR (when ``binding`` is
    None, the connection's own value)."""
    context = ssl.create_default_context(cafile=str(service.root_cert))
    context.maximum_version = tls
    port = int(service.base_url.rsplit(":", 1)[1])
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=20)
    connection.connect()
    sock = connection.sock
    assert isinstance(sock, ssl.SSLSocket)
    value = binding
    if value is None:
        unique = sock.get_channel_binding("tls-unique")
        assert unique is not None
        value = base64.b64encode(unique)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, user)])
    )
    if value:  # b"": no challengePassword
        builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, value)
    csr = builder.sign(key, hashes.SHA256())
    credentials = base64.b64encode(f"{user}:{SECRET}".encode()).decode()
    connection.request(
        "POST",
        f"/.well-known/est/{ENROLLMENT}/simpleenroll",
        body=base64.b64encode(csr.public_bytes(serialization.Encoding.DER)),
        headers={"Content-Type": "application/pkcs10", "Authorization": f"Basic {credentials}"},
    )
    response = connection.getresponse()
    status, body = response.status, response.read()
    connection.close()
    return status, body


@pytest.fixture
def binding_service(settings: Settings, tmp_path: Path) -> Iterator[Service]:
    required = settings.model_copy(
        update={"est": settings.est.model_copy(update={"channel_binding_required": [ENROLLMENT]})}
    )
    for service in start_service(required, tmp_path):
        yield with_orgs(service, "acme")


def _exporter_enroll(service: Service, user: str) -> tuple[str, bytes]:
    """Enroll over TLS 1.3 with ``openssl s_client``, which prints the connection's
    RFC 9266 tls-exporter value (``-keymatexport``); the CSR carries it and goes out on
    that same connection. The status line and the body."""
    port = service.base_url.rsplit(":", 1)[1]
    client = subprocess.Popen(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3",
         "-CAfile", str(service.root_cert), "-keymatexport", "EXPORTER-Channel-Binding",
         "-keymatexportlen", "32", "-ign_eof"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert client.stdin is not None
    assert client.stdout is not None
    try:
        material = None
        while material is None:
            line = client.stdout.readline()
            assert line, "s_client ended before printing the keying material"
            if line.strip().startswith(b"Keying material:"):
                material = bytes.fromhex(line.split(b":", 1)[1].strip().decode())
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, user)]))
            .add_attribute(AttributeOID.CHALLENGE_PASSWORD, base64.b64encode(material))
            .sign(key, hashes.SHA256())
        )
        body = base64.b64encode(csr.public_bytes(serialization.Encoding.DER))
        credentials = base64.b64encode(f"{user}:{SECRET}".encode()).decode()
        head = (
            f"POST /.well-known/est/{ENROLLMENT}/simpleenroll HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\nContent-Type: application/pkcs10\r\n"
            f"Authorization: Basic {credentials}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        client.stdin.write(head.encode() + body)
        client.stdin.flush()
        output, _ = client.communicate(timeout=60)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    start = output.index(b"HTTP/1.1 ")
    response = output[start:]
    head, _, payload = response.partition(b"\r\n\r\n")
    status_line, *fields = head.decode().split("\r\n")
    length = next(int(f.split(":")[1]) for f in fields if f.lower().startswith("content-length"))
    return status_line, payload[:length]  # s_client prints more after the connection ends


def test_channel_binding_ties_the_csr_to_the_tls_connection(binding_service: Service) -> None:
    service = binding_service
    enroll_oob(service)
    for device in ("bound-1", "bound-2", "bound-3", "bound-4"):
        register(service, device)
    before = state(service)
    for tls in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        status, body = _bound_enroll(
            service, tls=tls, binding=base64.b64encode(b"x" * 32), user="bound-1"
        )
        assert (status, b"channel_binding_mismatch" in body) == (400, True), (tls, body)
    status, body = _bound_enroll(
        service, tls=ssl.TLSVersion.TLSv1_3, binding=b"", user="bound-2"
    )  # no challengePassword at all where the enrollment requires it
    assert status == 400, body
    assert state(service) == before

    status, body = _bound_enroll(service, tls=ssl.TLSVersion.TLSv1_2, binding=None, user="bound-3")
    assert status == 200, body
    (issued,) = certificates_of(body)
    assert issued.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "bound-3"
    status_line, payload = _exporter_enroll(service, "bound-4")
    assert status_line.startswith("HTTP/1.1 200"), (status_line, payload)
    (issued,) = certificates_of(payload.strip())
    assert issued.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "bound-4"
    with service.client() as client:
        attrs = client.get(url(service, "csrattrs"))
    assert ":challengePassword" in _oids(base64.b64decode(attrs.content))


def _oids(der: bytes) -> str:
    """``openssl asn1parse`` of a DER structure."""
    printed = subprocess.run(
        ["openssl", "asn1parse", "-inform", "DER"], input=der, capture_output=True, timeout=10
    )
    return printed.stdout.decode()
