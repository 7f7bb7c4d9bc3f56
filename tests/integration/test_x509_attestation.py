"""x509 attestation over real HTTPS: manufacturer certificates (IDevID) by mutual TLS and
by signed request, and everything that must refuse them without changing any state."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import imprint.server
from imprint.attestation.jws import provision_payload, sign_compact
from imprint.runtime import open_runtime
from imprint.server import build_server
from imprint.settings import Settings
from tests.integration.conftest import Service, start_service, with_orgs, write_credentials


@pytest.fixture
def service(service: Service) -> Service:
    """The server, with the organizations this module's enrollments name."""
    return with_orgs(service, "acme")


PROBLEM = "application/problem+json"
NOW = datetime.now(UTC)
DeviceKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme Devices"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    key_cert_sign: bool | None = True,
) -> x509.Certificate:
    """A CA certificate; ``key_cert_sign=None`` leaves key usage out (openssl's default)."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=400))
        .not_valid_after(NOW + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if key_cert_sign is not None:
        usage = x509.KeyUsage(True, False, False, False, False, key_cert_sign, True, False, False)
        builder = builder.add_extension(usage, critical=True)
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class Line:
    """A manufacturer's intermediate CA that signs device certificates (IDevIDs)."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    revoked: list[int] = field(default_factory=list)

    def idevid(
        self,
        common_name: str,
        *,
        key: DeviceKey | None = None,
        valid: tuple[datetime, datetime] | None = None,
        serial_attribute: str | None = None,
        client_auth: bool = True,
    ) -> tuple[x509.Certificate, DeviceKey]:
        device_key = key or ec.generate_private_key(ec.SECP256R1())
        not_before, not_after = valid or (NOW - timedelta(days=30), NOW + timedelta(days=3650))
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        if serial_attribute is not None:
            attributes.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial_attribute))
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client_auth else ExtendedKeyUsageOID.CODE_SIGNING
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(self.certificate.subject)
            .public_key(device_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
            .add_extension(
                x509.CRLDistributionPoints(
                    [
                        x509.DistributionPoint(
                            [x509.UniformResourceIdentifier("http://crl.acme.example/line.crl")],
                            None,
                            None,
                            None,
                        )
                    ]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return certificate, device_key


@dataclass
class Manufacturer:
    root: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey
    lines: dict[str, Line]

    @classmethod
    def create(
        cls, name: str, lines: tuple[str, ...] = ("Line A",), *, lines_sign: bool = True
    ) -> Manufacturer:
        """A root without key usage, as openssl makes them, and intermediates with one;
        ``lines_sign=False`` makes intermediates whose key usage forbids signing certificates."""
        root_key = ec.generate_private_key(ec.SECP256R1())
        root = _ca(_name(f"{name} Root CA"), root_key, None, root_key, key_cert_sign=None)
        made = {}
        for line in lines:
            key = ec.generate_private_key(ec.SECP256R1())
            certificate = _ca(
                _name(f"{name} {line}"), key, root, root_key, key_cert_sign=lines_sign
            )
            made[line] = Line(certificate, key)
        return cls(root, root_key, made)

    @property
    def line(self) -> Line:
        return next(iter(self.lines.values()))

    def chain(self, line: str | None = None) -> list[str]:
        """What an enrollment holds: the intermediate, then the root (PEM)."""
        intermediate = self.lines[line] if line else self.line
        return [_pem(intermediate.certificate), _pem(self.root)]


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def crl_of(
    issuer: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    serials: list[int],
    number: int,
) -> str:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(NOW - timedelta(minutes=number))
        .next_update(NOW + timedelta(days=7))
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(NOW - timedelta(hours=1))
            .build()
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def acme() -> Manufacturer:
    return Manufacturer.create("Acme", ("Line A", "Line B"))


@pytest.fixture(scope="module")
def other() -> Manufacturer:
    return Manufacturer.create("Globex")


def make_csr(common_name: str = "ignored") -> tuple[x509.CertificateSigningRequest, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return csr, csr.public_bytes(serialization.Encoding.PEM).decode()


def enroll(service: Service, chain: list[str], **extra: Any) -> dict[str, Any]:
    body = {"mechanism": "x509", "owner": "acme", "x509": {"certificate_chain": chain}}
    x509_extra = {
        k: extra.pop(k) for k in ("lead_certificate_name", "accept_expired") if k in extra
    }
    body["x509"].update(x509_extra)  # type: ignore[attr-defined]
    with service.admin() as client:
        response = client.post("/api/v1/enrollments", json={**body, **extra})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def signed_body(
    service: Service,
    leaf: x509.Certificate,
    key: DeviceKey,
    chain: list[x509.Certificate],
    **overrides: Any,
) -> dict[str, Any]:
    """A provisioning request signed with the IDevID key, no client certificate needed."""
    csr, csr_pem = make_csr()
    payload = provision_payload(csr, f"{service.base_url}/api/v1/provision")
    payload.update(overrides)
    token = sign_compact(payload, key, [leaf, *chain])
    return {"mechanism": "x509", "csr": csr_pem, "evidence": {"jws": token}}


def state(service: Service) -> tuple[int, int]:
    """(devices, certificate records): a refused request changes neither."""
    runtime = service.runtime
    return len(runtime.devices.search(limit=10_000)), len(runtime.ledger.search(limit=10_000))


def _post(service: Service, body: dict[str, Any], client: httpx.Client | None) -> httpx.Response:
    if client is not None:
        return client.post("/api/v1/provision", json=body)
    with service.client() as http:
        return http.post("/api/v1/provision", json=body)


def refused(
    service: Service,
    body: dict[str, Any],
    code: str,
    status: int = 403,
    client: httpx.Client | None = None,
) -> dict[str, Any]:
    before = state(service)
    response = _post(service, body, client)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    problem: dict[str, Any] = response.json()
    assert problem["code"] == code, problem
    assert state(service) == before
    return problem


def provisioned(
    service: Service, body: dict[str, Any], client: httpx.Client | None = None
) -> dict[str, Any]:
    response = _post(service, body, client)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    assert answer["status"] == "approved"
    return answer


def idevid_files(
    service: Service, name: str, leaf: x509.Certificate, key: DeviceKey, line: Line
) -> tuple[Path, Path]:
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return write_credentials(service.workdir, name, _pem(leaf) + _pem(line.certificate), key)


def openssl_verifies(service: Service, certificate_pem: str) -> None:
    leaf = service.workdir / "issued.pem"
    leaf.write_text(certificate_pem)
    ca = service.runtime.settings.ca_dir
    result = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(ca / "root.crt"),
            "-untrusted",
            str(ca / "issuing.crt"),
            str(leaf),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.both_databases
def test_idevid_over_mutual_tls_gets_a_certificate(service: Service, acme: Manufacturer) -> None:
    enrollment = enroll(service, acme.chain())
    leaf, key = acme.line.idevid("meter-0001")
    credentials = idevid_files(service, "meter-0001", leaf, key, acme.line)
    _csr, csr_pem = make_csr("whatever-the-device-says")

    # The enrollment was created while the server runs: the TLS gate learned its chain.
    with service.client(cert=credentials) as device:
        answer = provisioned(service, {"mechanism": "x509", "csr": csr_pem}, device)
        # The gate lets a manufacturer certificate in, but it is no imprint identity.
        assert device.get("/api/v1/whoami").json()["client_certificate"] is None

    assert answer["device_id"] == "meter-0001"
    bundle = answer["bundle"]
    assert bundle["enrollment_id"] == enrollment["id"]
    assert bundle["owner"] == "acme"
    openssl_verifies(service, bundle["certificate"])
    issued = x509.load_pem_x509_certificate(bundle["certificate"].encode())
    assert issued.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "meter-0001"
    device = service.runtime.devices.find("acme", "meter-0001")
    assert device is not None
    assert device.mechanism == "x509"
    assert device.pinned_fingerprint == leaf.fingerprint(hashes.SHA256()).hex()
    record = service.runtime.ledger.get(bundle["serial"])
    assert record.requested_by == f"x509:sha256:{device.pinned_fingerprint}"


@contextmanager
def restarted(service: Service) -> Iterator[httpx.URL]:
    """A second server process on the same data: what a restart of imprint finds."""
    runtime = open_runtime(service.runtime.settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = build_server(runtime)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive(), "server thread died during start-up"
        assert time.monotonic() < deadline, "server did not start within 10 s"
        time.sleep(0.02)
    try:
        yield httpx.URL(f"https://127.0.0.1:{sock.getsockname()[1]}")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        runtime.close()


def test_enrollments_are_trusted_in_the_handshake_after_a_restart(
    service: Service, acme: Manufacturer
) -> None:
    enroll(service, acme.chain())
    leaf, key = acme.line.idevid("meter-restart")
    credentials = idevid_files(service, "meter-restart", leaf, key, acme.line)
    _csr, csr_pem = make_csr()
    context = ssl.create_default_context(cafile=str(service.root_cert))
    context.load_cert_chain(*map(str, credentials))
    with restarted(service) as url, httpx.Client(base_url=url, verify=context) as device:
        response = device.post("/api/v1/provision", json={"mechanism": "x509", "csr": csr_pem})
    assert response.status_code == 200, response.text
    assert response.json()["device_id"] == "meter-restart"


@pytest.mark.both_databases
def test_enrollments_made_elsewhere_reach_the_handshake_within_seconds(
    service: Service, acme: Manufacturer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another node (or the CLI) enrolls a manufacturer: this server's gate follows."""
    monkeypatch.setattr(imprint.server, "TRUST_REFRESH_SECONDS", 0.2)
    leaf, key = acme.line.idevid("meter-peer")
    credentials = idevid_files(service, "meter-peer", leaf, key, acme.line)
    _csr, csr_pem = make_csr()
    context = ssl.create_default_context(cafile=str(service.root_cert))
    context.load_cert_chain(*map(str, credentials))

    def attempt(url: httpx.URL) -> httpx.Response:
        with httpx.Client(base_url=url, verify=context) as device:
            return device.post("/api/v1/provision", json={"mechanism": "x509", "csr": csr_pem})

    with restarted(service) as url:
        refused = attempt(url)  # nobody vouches for this manufacturer yet
        assert (refused.status_code, refused.json()["code"]) == (403, "issuer_unknown")
        enroll(service, acme.chain())  # through the other server
        deadline = time.monotonic() + 10
        while True:
            response = attempt(url)
            if response.status_code != 403:
                break
            assert time.monotonic() < deadline, "the gate never learned the new CA"
            time.sleep(0.1)
    assert response.status_code == 200, response.text
    assert response.json()["device_id"] == "meter-peer"


def test_signed_request_without_client_certificate(service: Service, acme: Manufacturer) -> None:
    enroll(service, acme.chain())
    leaf, key = acme.line.idevid("meter-0002")
    body = signed_body(service, leaf, key, [acme.line.certificate])

    answer = provisioned(service, body)

    assert answer["device_id"] == "meter-0002"
    openssl_verifies(service, answer["bundle"]["certificate"])
    # The same signed request again is a replay, however valid it was the first time.
    refused(service, body, "replay_detected")


def test_a_signed_request_refused_in_the_unit_of_work_has_spent_its_nonce(
    service: Service, acme: Manufacturer
) -> None:
    """The nonce is spent in the request's unit of work, which a refusal there rolls
    back; the journal of the refusal spends it again, so replaying the refused request
    is a replay, not a second look at the device."""
    enroll(service, acme.chain())
    leaf, key = acme.line.idevid("meter-0003")
    provisioned(service, signed_body(service, leaf, key, [acme.line.certificate]))
    device = service.runtime.devices.find("acme", "meter-0003")
    assert device is not None
    with service.admin() as admin:
        disabled = admin.post(f"/api/v1/devices/{device.id}/disable")
        assert disabled.status_code == 200, disabled.text
    body = signed_body(service, leaf, key, [acme.line.certificate])
    refused(service, body, "device_disabled")  # under the device's lock, in the unit
    with service.admin() as admin:
        assert admin.post(f"/api/v1/devices/{device.id}/enable").status_code == 200
    refused(service, body, "replay_detected")
    # A fresh request from the same device goes through.
    provisioned(service, signed_body(service, leaf, key, [acme.line.certificate]))


@pytest.mark.parametrize(
    "make_key",
    [
        pytest.param(lambda: ec.generate_private_key(ec.SECP384R1()), id="ES384"),
        pytest.param(lambda: rsa.generate_private_key(65537, 2048), id="PS256"),
        pytest.param(ed25519.Ed25519PrivateKey.generate, id="EdDSA"),
    ],
)
def test_signed_request_with_other_key_types(
    service: Service, acme: Manufacturer, make_key: Any
) -> None:
    enroll(service, acme.chain())
    leaf, key = acme.line.idevid("meter-keys", key=make_key())
    answer = provisioned(service, signed_body(service, leaf, key, [acme.line.certificate]))
    assert answer["device_id"] == "meter-keys"


def _tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["nonce"] = "x" * 32
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def _alg_none(token: str) -> str:
    header, payload, _signature = token.split(".")
    fields = json.loads(base64.urlsafe_b64decode(header + "=="))
    fields["alg"] = "none"
    unsigned = base64.urlsafe_b64encode(json.dumps(fields).encode()).rstrip(b"=").decode()
    return f"{unsigned}.{payload}."


def test_signed_requests_that_prove_nothing_are_refused(
    service: Service, acme: Manufacturer
) -> None:
    enroll(service, acme.chain())
    leaf, key = acme.line.idevid("meter-0003")
    chain = [acme.line.certificate]
    valid = signed_body(service, leaf, key, chain)
    token = valid["evidence"]["jws"]

    refused(service, {**valid, "evidence": {"jws": _tamper(token)}}, "signature_invalid")
    refused(service, {**valid, "evidence": {"jws": _alg_none(token)}}, "signature_invalid")
    refused(service, {**valid, "evidence": {"jws": "not.a-jws"}}, "jws_malformed", status=400)
    stale = int((NOW - timedelta(minutes=10)).timestamp())
    refused(service, signed_body(service, leaf, key, chain, iat=stale), "request_expired")
    other_server = {"aud": "https://elsewhere.example/api/v1/provision"}
    refused(service, signed_body(service, leaf, key, chain, **other_server), "audience_mismatch")
    # Signed for another CSR: the signature is fine, the key in the CSR is not the signed one.
    _other_csr, other_pem = make_csr()
    refused(service, {**valid, "csr": other_pem}, "key_mismatch")
    # No refusal used up the nonce: the untouched request still goes through.
    assert provisioned(service, valid)["device_id"] == "meter-0003"


def test_no_evidence_at_all(service: Service, acme: Manufacturer) -> None:
    enroll(service, acme.chain())
    _csr, csr_pem = make_csr()
    problem = refused(service, {"mechanism": "x509", "csr": csr_pem}, "evidence_missing", 400)
    assert "jws" in problem["detail"]


def test_certificate_from_another_manufacturer_is_not_enrolled(
    service: Service, acme: Manufacturer, other: Manufacturer
) -> None:
    enroll(service, acme.chain())
    leaf, key = other.line.idevid("intruder")
    refused(service, signed_body(service, leaf, key, [other.line.certificate]), "not_enrolled")
    # By mutual TLS the application's gate refuses it: no CA imprint knows issued it.
    credentials = idevid_files(service, "intruder", leaf, key, other.line)
    _csr, csr_pem = make_csr()
    before = state(service)
    with service.client(cert=credentials) as device:
        response = device.post("/api/v1/provision", json={"mechanism": "x509", "csr": csr_pem})
    assert (response.status_code, response.json()["code"]) == (403, "issuer_unknown")
    assert state(service) == before
    # Nor does a certificate of the right manufacturer that is not for client auth.
    wrong_use, wrong_key = acme.line.idevid("signer", client_auth=False)
    body = signed_body(service, wrong_use, wrong_key, [acme.line.certificate])
    refused(service, body, "eku_missing")


def test_ca_that_may_not_sign_certificates_admits_nobody(service: Service) -> None:
    sloppy = Manufacturer.create("Sloppy", lines_sign=False)
    enrollment = enroll(service, sloppy.chain())
    leaf, key = sloppy.line.idevid("sloppy-1")
    body = {
        **signed_body(service, leaf, key, [sloppy.line.certificate]),
        "enrollment_id": enrollment["id"],
    }
    problem = refused(service, body, "not_enrolled")
    assert "keyCertSign" in problem["detail"]


def test_expired_idevid_needs_the_enrollments_opt_in(service: Service, acme: Manufacturer) -> None:
    strict = enroll(service, acme.chain())
    leaf, key = acme.line.idevid(
        "old-meter", valid=(NOW - timedelta(days=300), NOW - timedelta(days=2))
    )
    chain = [acme.line.certificate]
    problem = refused(service, signed_body(service, leaf, key, chain), "certificate_expired")
    assert "expired" in problem["detail"]

    lenient = enroll(service, acme.chain(), accept_expired=True)
    answer = provisioned(service, signed_body(service, leaf, key, chain))
    assert answer["bundle"]["enrollment_id"] == lenient["id"]
    # Naming the strict enrollment still refuses it.
    body = {**signed_body(service, leaf, key, chain), "enrollment_id": strict["id"]}
    refused(service, body, "certificate_expired")


@pytest.fixture
def proxied(settings: Settings, tmp_path: Path) -> Iterator[Service]:
    """The server behind a TLS-terminating proxy on 127.0.0.1 (``server.trusted_proxies``)."""
    server = settings.server.model_copy(update={"trusted_proxies": ["127.0.0.1/32"]})
    for service in start_service(settings.model_copy(update={"server": server}), tmp_path):
        yield with_orgs(service, "acme")


def test_a_proxy_forwards_a_manufacturer_certificate_judged_as_on_the_connection(
    proxied: Service, acme: Manufacturer
) -> None:
    """Acme's root has no key usage (as openssl makes them) and this IDevID has expired,
    which its enrollment accepts: on imprint's own connection it registers, and
    forwarded by the proxy (the leaf alone, base64 DER) it must too."""
    enroll(proxied, acme.chain(), accept_expired=True)
    leaf, _key = acme.line.idevid(
        "old-meter-proxied", valid=(NOW - timedelta(days=300), NOW - timedelta(days=2))
    )
    forwarded = {
        "X-Client-Cert": base64.b64encode(leaf.public_bytes(serialization.Encoding.DER)).decode()
    }
    _csr, csr_pem = make_csr()
    with proxied.client() as proxy:
        response = proxy.post(
            "/api/v1/provision", json={"mechanism": "x509", "csr": csr_pem}, headers=forwarded
        )
    assert response.status_code == 200, response.text
    assert response.json()["device_id"] == "old-meter-proxied"


def test_revoked_by_an_uploaded_manufacturer_crl(service: Service, acme: Manufacturer) -> None:
    enroll(service, acme.chain())
    line = acme.line
    revoked, revoked_key = line.idevid("stolen-meter")
    fine, fine_key = line.idevid("honest-meter")
    with service.admin() as admin:
        uploaded = admin.post(
            "/api/v1/manufacturer-crls",
            json={"crl": crl_of(line.certificate, line.key, [revoked.serial_number], 2)},
        )
        assert uploaded.status_code == 201, uploaded.text
        listed = admin.get("/api/v1/manufacturer-crls").json()["items"]
        older = admin.post(
            "/api/v1/manufacturer-crls", json={"crl": crl_of(line.certificate, line.key, [], 1)}
        )
        foreign = Manufacturer.create("Initech")
        unknown = admin.post(
            "/api/v1/manufacturer-crls",
            json={"crl": crl_of(foreign.line.certificate, foreign.line.key, [], 1)},
        )
    with service.client() as anybody:
        anonymous = anybody.post("/api/v1/manufacturer-crls", json={"crl": "x"})
    assert uploaded.json()["issuer"] == line.certificate.subject.rfc4514_string()
    assert uploaded.json()["revoked_count"] == 1
    assert [item["issuer_key_sha256"] for item in listed] == [uploaded.json()["issuer_key_sha256"]]
    assert (older.status_code, older.json()["code"]) == (409, "crl_outdated")
    assert (unknown.status_code, unknown.json()["code"]) == (400, "crl_issuer_unknown")
    assert anonymous.status_code == 401

    problem = refused(
        service,
        signed_body(service, revoked, revoked_key, [line.certificate]),
        "certificate_revoked",
    )
    assert "device certificate" in problem["detail"]
    assert provisioned(service, signed_body(service, fine, fine_key, [line.certificate]))

    # A CRL of the root that revokes the intermediate refuses all its devices.
    with service.admin() as admin:
        root_crl = crl_of(acme.root, acme.root_key, [line.certificate.serial_number], 1)
        assert admin.post("/api/v1/manufacturer-crls", json={"crl": root_crl}).status_code == 201
    another, another_key = line.idevid("later-meter")
    refused(
        service,
        signed_body(service, another, another_key, [line.certificate]),
        "certificate_revoked",
    )


def test_denied_certificate(service: Service, acme: Manufacturer) -> None:
    enroll(service, acme.chain())
    leaf, key = acme.line.idevid("cloned-meter")
    fingerprint = leaf.fingerprint(hashes.SHA256()).hex()
    with service.admin() as admin:
        added = admin.post(
            "/api/v1/denied-certificates",
            json={"fingerprint_sha256": fingerprint.upper(), "reason": "cloned in the field"},
        )
        again = admin.post(
            "/api/v1/denied-certificates",
            json={"certificate": _pem(leaf), "reason": "twice"},
        )
        listed = admin.get("/api/v1/denied-certificates").json()["items"]
    assert added.status_code == 201, added.text
    assert added.json()["fingerprint_sha256"] == fingerprint
    assert (again.status_code, again.json()["code"]) == (409, "already_denied")
    assert [item["fingerprint_sha256"] for item in listed] == [fingerprint]

    credentials = idevid_files(service, "cloned-meter", leaf, key, acme.line)
    _csr, csr_pem = make_csr()
    with service.client(cert=credentials) as device:
        refused(service, {"mechanism": "x509", "csr": csr_pem}, "certificate_denied", client=device)
    refused(service, signed_body(service, leaf, key, [acme.line.certificate]), "certificate_denied")

    with service.admin() as admin:
        assert admin.delete(f"/api/v1/denied-certificates/{fingerprint}").status_code == 204
        gone = admin.delete(f"/api/v1/denied-certificates/{fingerprint}")
    assert gone.status_code == 404
    assert provisioned(service, signed_body(service, leaf, key, [acme.line.certificate]))


def test_lead_certificate_picks_the_enrollment_group(service: Service, acme: Manufacturer) -> None:
    whole = enroll(service, [_pem(acme.root)])
    line_a = enroll(service, acme.chain("Line A"), lead_certificate_name="Acme Line A")
    line_b = enroll(service, acme.chain("Line B"), lead_certificate_name="Acme Line B")
    leaf_a, key_a = acme.lines["Line A"].idevid("a-1")
    leaf_b, key_b = acme.lines["Line B"].idevid("b-1")
    line_a_chain = [acme.lines["Line A"].certificate]
    line_b_chain = [acme.lines["Line B"].certificate]

    # The group whose lead certificate is nearest the device certificate wins.
    answer_a = provisioned(service, signed_body(service, leaf_a, key_a, line_a_chain))
    answer_b = provisioned(service, signed_body(service, leaf_b, key_b, line_b_chain))
    assert answer_a["bundle"]["enrollment_id"] == line_a["id"]
    assert answer_b["bundle"]["enrollment_id"] == line_b["id"]

    # Naming an enrollment restricts the match to it.
    leaf_c, key_c = acme.lines["Line B"].idevid("b-2")
    named_whole = {
        **signed_body(service, leaf_c, key_c, line_b_chain),
        "enrollment_id": whole["id"],
    }
    assert provisioned(service, named_whole)["bundle"]["enrollment_id"] == whole["id"]
    named_wrong = {
        **signed_body(service, leaf_c, key_c, line_b_chain),
        "enrollment_id": line_a["id"],
    }
    refused(service, named_wrong, "not_enrolled")


def test_device_id_rules_and_pinning(service: Service, acme: Manufacturer) -> None:
    chain = [acme.line.certificate]
    by_serial = enroll(service, acme.chain(), device_id_rule="serial-number")
    leaf, key = acme.line.idevid("model-x", serial_attribute="SN-000042")
    answer = provisioned(service, signed_body(service, leaf, key, chain))
    assert (answer["device_id"], answer["bundle"]["enrollment_id"]) == (
        "SN-000042",
        by_serial["id"],
    )

    without, without_key = acme.line.idevid("model-x")
    refused(service, signed_body(service, without, without_key, chain), "device_id_unavailable")

    # Another certificate claiming the same serialNumber cannot take over the device.
    clone, clone_key = acme.line.idevid("model-x", serial_attribute="SN-000042")
    refused(service, signed_body(service, clone, clone_key, chain), "identity_taken")
    # The original device may come back (a retry or a new key) as often as it likes.
    assert provisioned(service, signed_body(service, leaf, key, chain))["device_id"] == "SN-000042"

    with service.admin() as admin:
        admin.delete(f"/api/v1/enrollments/{by_serial['id']}")
    enroll(service, acme.chain(), device_id_rule="registration-id")
    numbered, numbered_key = acme.line.idevid("model-y")
    answer = provisioned(service, signed_body(service, numbered, numbered_key, chain))
    assert answer["device_id"] == format(numbered.serial_number, "x")
