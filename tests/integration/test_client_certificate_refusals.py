"""Every kind of bad client certificate reaches the application over real mutual TLS and
is refused over HTTP with its own code, a log line naming it, and a metric; a client CA
trusted as a root admits a device that sends its intermediate."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.integration.conftest import Service, write_credentials


@dataclass
class Issued:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_certificate(
    common_name: str,
    issuer: Issued | None,
    *,
    ca: bool = False,
    usage: list[x509.ObjectIdentifier] | None = None,
    not_after: datetime | None = None,
) -> Issued:
    """A certificate signed by ``issuer`` (self-signed without one); a leaf gets
    ``usage`` as its extended key usage (clientAuth unless told)."""
    now = datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer.certificate.subject if issuer else _name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=2))
        .not_valid_after(not_after or now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        usages = usage if usage is not None else [ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    signer = issuer.key if issuer else key
    return Issued(builder.sign(signer, hashes.SHA256()), key)


def credentials(directory: Path, name: str, *chain: Issued) -> tuple[Path, Path]:
    """Files for a client: ``chain`` (leaf first) and the leaf's key."""
    return write_credentials(directory, name, "".join(c.pem for c in chain), chain[0].key)


def csr_pem(common_name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name(common_name))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


@dataclass
class DevicePki:
    root: Issued
    intermediate: Issued
    directory: Path


@pytest.fixture
def root_trusted(service: Service, tmp_path: Path) -> DevicePki:
    """A two-level device CA of which only the root is trusted (client-ca enrollment)."""
    root = make_certificate("Factory Root CA", None, ca=True)
    intermediate = make_certificate("Factory Line 7 CA", root, ca=True)
    with service.admin() as client:
        created = client.post(
            "/api/v1/enrollments",
            json={"id": "line7", "mechanism": "client-ca", "owner": "acme"},
        )
        assert created.status_code == 201, created.text
        added = client.post("/api/v1/enrollments/line7/client-cas", json={"pem": root.pem})
        assert added.status_code == 201, added.text
    return DevicePki(root, intermediate, tmp_path)


def provision(service: Service, files: tuple[Path, Path], common_name: str) -> httpx.Response:
    with service.client(cert=files) as client:
        return client.post(
            "/api/v1/provision", json={"mechanism": "client-ca", "csr": csr_pem(common_name)}
        )


def refusals(service: Service) -> dict[str, float]:
    with service.client() as client:
        text = client.get("/metrics").text
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("imprint_client_certificate_refusals_total{"):
            code = line.split('code="', 1)[1].split('"', 1)[0]
            counts[code] = float(line.rsplit(" ", 1)[1])
    return counts


def assert_refused(
    response: httpx.Response,
    code: str,
    leaf: Issued,
    capfd: pytest.CaptureFixture[str],
) -> None:
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code
    fingerprint = hashlib.sha256(
        leaf.certificate.public_bytes(serialization.Encoding.DER)
    ).hexdigest()
    output = capfd.readouterr()
    logged = [
        line
        for line in (output.out + output.err).splitlines()
        if "client_certificate_refused" in line
    ]
    assert any(
        fingerprint in line
        and f"code={code}" in line
        and leaf.certificate.issuer.rfc4514_string() in line
        for line in logged
    ), logged


def test_root_only_trust_admits_a_device_that_sends_its_intermediate(
    service: Service, root_trusted: DevicePki
) -> None:
    pki = root_trusted
    leaf = make_certificate("meter-0001", pki.intermediate)
    files = credentials(pki.directory, "meter-0001", leaf, pki.intermediate)
    response = provision(service, files, "meter-0001")
    assert response.status_code == 200, response.text
    assert response.json()["device_id"] == "meter-0001"


def test_each_bad_client_certificate_gets_its_code_a_log_line_and_a_count(
    service: Service, root_trusted: DevicePki, capfd: pytest.CaptureFixture[str]
) -> None:
    pki = root_trusted
    directory = pki.directory
    # A sibling device proves the intermediate: imprint now knows it is one.
    sibling = make_certificate("meter-0002", pki.intermediate)
    ok = provision(service, credentials(directory, "sibling", sibling, pki.intermediate), "x")
    assert ok.status_code == 200, ok.text

    expired = make_certificate(
        "meter-0003", pki.intermediate, not_after=datetime.now(UTC) - timedelta(days=1)
    )
    rogue_ca = make_certificate("Rogue CA", None, ca=True)
    rogue = make_certificate("meter-0004", rogue_ca)
    orphan = make_certificate("meter-0005", pki.intermediate)
    no_client_auth = make_certificate(
        "meter-0006", pki.intermediate, usage=[ExtendedKeyUsageOID.SERVER_AUTH]
    )
    self_signed = make_certificate("meter-0007", None)
    cases = [
        ("certificate_expired", expired, (expired, pki.intermediate)),
        ("issuer_unknown", rogue, (rogue,)),
        ("chain_incomplete", orphan, (orphan,)),
        ("eku_missing", no_client_auth, (no_client_auth, pki.intermediate)),
        ("self_signed", self_signed, (self_signed,)),
    ]
    for code, leaf, chain in cases:
        files = credentials(directory, code, *chain)
        assert_refused(provision(service, files, "x"), code, leaf, capfd)

    # A device of imprint's own CA whose certificate was revoked cannot renew.
    key = ec.generate_private_key(ec.SECP256R1())
    files = service.device_credentials("meter-0008")
    issued = x509.load_pem_x509_certificate(files[0].read_bytes())
    service.runtime.authority.revoke(
        format(issued.serial_number, "x"), x509.ReasonFlags.key_compromise
    )
    with service.client(cert=files) as client:
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(_name("meter-0008"))
            .sign(key, hashes.SHA256())
        )
        renewal = client.post(
            "/api/v1/renew",
            json={"csr": csr.public_bytes(serialization.Encoding.PEM).decode()},
        )
    assert_refused(renewal, "certificate_revoked", Issued(issued, key), capfd)

    counted = refusals(service)
    for code in [c for c, _, _ in cases] + ["certificate_revoked"]:
        assert counted.get(code, 0) >= 1, (code, counted)
    # Nothing was provisioned for the refused devices.
    with service.admin() as client:
        devices = client.get("/api/v1/devices", params={"enrollment_id": "line7"}).json()
    assert {d["device_id"] for d in devices["items"]} == {"meter-0002"}


def test_a_device_sending_the_root_but_not_its_intermediate_is_told_so(
    service: Service, root_trusted: DevicePki, capfd: pytest.CaptureFixture[str]
) -> None:
    """The gap is visible in what the device sent: no history is needed."""
    pki = root_trusted
    leaf = make_certificate("meter-0010", pki.intermediate)
    files = credentials(pki.directory, "gap", leaf, pki.root)
    assert_refused(provision(service, files, "meter-0010"), "chain_incomplete", leaf, capfd)


def test_an_intermediate_trusted_by_itself_admits_its_devices_alone(
    service: Service, tmp_path: Path
) -> None:
    root = make_certificate("Vendor Root CA", None, ca=True)
    intermediate = make_certificate("Vendor Devices CA", root, ca=True)
    with service.admin() as client:
        client.post(
            "/api/v1/enrollments",
            json={"id": "vendor", "mechanism": "client-ca", "owner": "acme"},
        ).raise_for_status()
        preview = client.post(
            "/api/v1/client-cas/decode", json={"pem": intermediate.pem + root.pem}
        )
        client.post(
            "/api/v1/enrollments/vendor/client-cas", json={"pem": intermediate.pem}
        ).raise_for_status()
    decoded = preview.json()
    assert [d["trusted_as"] for d in decoded] == ["intermediate", "root"]
    assert decoded[0]["chain"] == ["CN=Vendor Devices CA", "CN=Vendor Root CA"]
    assert decoded[1]["chain"] == ["CN=Vendor Root CA"]
    leaf = make_certificate("sensor-1", intermediate)
    response = provision(service, credentials(tmp_path, "sensor-1", leaf), "sensor-1")
    assert response.status_code == 200, response.text
