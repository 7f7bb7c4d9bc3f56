"""Every mechanism's certificate, checked by tools that are not imprint.

One device is provisioned with each mechanism through the real HTTPS server (the
connector's client-ca device entirely with ``openssl`` and ``curl``). Each issued
chain must pass ``openssl verify -x509_strict -purpose sslclient`` against the trust
anchor the bundle names, and pkilint's RFC 5280 linters (the ``lint_pkix_cert`` and
``lint_pkix_signer_signee_cert_chain`` commands) must report nothing above INFO for the
device certificate, the issuing CA, and each issuer/subject pair of the chain.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from imprint.attestation.jws import provision_payload, sign_compact
from imprint.attestation.oob_secret import idprov_signature, oob_mac
from imprint.attestation.symmetric_key import csr_sha256, derive_device_key, symmetric_key_token
from tests.integration.conftest import Service, with_orgs, write_credentials
from tests.integration.test_client_ca import csr_for, curl_provision, make_ca, make_device
from tests.integration.test_lifecycle import Factory
from tests.integration.test_x509_attestation import Manufacturer


@pytest.fixture
def service(service: Service) -> Service:
    """The server, with the organizations this module's enrollments name."""
    return with_orgs(service, "acme", "hub", "the-simpsons")


BIN = Path(sys.executable).parent
SECRET = "printed-on-the-box-0042"


def make_csr(key: Any = None) -> tuple[str, x509.CertificateSigningRequest]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chosen-by-device")]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM).decode(), request


def admin_post(service: Service, path: str, body: Any = None) -> dict[str, Any]:
    with service.admin() as admin:
        response = admin.post(path, json=body)
    assert response.status_code in (200, 201), response.text
    answer: dict[str, Any] = response.json()
    return answer


def approved(service: Service, body: dict[str, Any], **client: Any) -> dict[str, Any]:
    path = client.pop("path", "/api/v1/provision")
    with service.client(**client) as http:
        response = http.post(path, json=body)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "approved"
    bundle: dict[str, Any] = response.json()["bundle"]
    return bundle


# --- one device per mechanism: each returns (certificate chain PEM, trust anchor PEM) -------

Issued = tuple[str, str]


def of(bundle: dict[str, Any]) -> Issued:
    return bundle["certificate_chain"], bundle["trust_anchors"][0]


def x509_over_mutual_tls(service: Service, directory: Path) -> Issued:
    acme = Manufacturer.create("Acme")
    admin_post(
        service,
        "/api/v1/enrollments",
        {"mechanism": "x509", "owner": "acme", "x509": {"certificate_chain": acme.chain()}},
    )
    leaf, key = acme.line.idevid("meter-0001")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    line_pem = acme.line.certificate.public_bytes(serialization.Encoding.PEM).decode()
    leaf_pem = leaf.public_bytes(serialization.Encoding.PEM).decode()
    files = write_credentials(directory, "meter-0001", leaf_pem + line_pem, key)
    return of(approved(service, {"mechanism": "x509", "csr": make_csr()[0]}, cert=files))


def x509_signed_request(service: Service, directory: Path) -> Issued:
    acme = Manufacturer.create("Acme")
    admin_post(
        service,
        "/api/v1/enrollments",
        {"mechanism": "x509", "owner": "acme", "x509": {"certificate_chain": acme.chain()}},
    )
    leaf, key = acme.line.idevid("meter-0002")
    pem, request = make_csr()
    payload = provision_payload(request, f"{service.base_url}/api/v1/provision")
    token = sign_compact(payload, key, [leaf, acme.line.certificate])
    return of(approved(service, {"mechanism": "x509", "csr": pem, "evidence": {"jws": token}}))


def client_ca_with_openssl_and_curl(service: Service, directory: Path) -> Issued:
    make_ca(directory, "factory-ca")
    admin_post(
        service,
        "/api/v1/enrollments",
        {"id": "connector", "mechanism": "client-ca", "owner": "acme"},
    )
    ca_pem = (directory / "factory-ca.pem").read_text()
    admin_post(service, "/api/v1/enrollments/connector/client-cas", {"pem": ca_pem})
    device = make_device(directory, "factory-ca", "dev-1")
    body: dict[str, object] = {"mechanism": "client-ca", "csr": csr_for(directory, device)}
    status, answer = curl_provision(service, directory, device, body)
    assert status == 200, answer
    with service.admin() as admin:
        listed = admin.get("/api/v1/devices", params={"enrollment_id": "connector"}).json()
    assert [d["device_id"] for d in listed["items"]] == ["dev-1"]
    bundle = answer["bundle"]
    assert isinstance(bundle, dict)
    return of(bundle)


def oob_secret(service: Service, directory: Path) -> Issued:
    admin_post(
        service, "/api/v1/enrollments", {"id": "lab", "mechanism": "oob-secret", "owner": "acme"}
    )
    admin_post(
        service, "/api/v1/enrollments/lab/oob-secrets", {"device_id": "meter-3", "secret": SECRET}
    )
    pem, request = make_csr()
    stamp, nonce = int(time.time()), secrets.token_urlsafe(18)
    evidence = {
        "timestamp": stamp,
        "nonce": nonce,
        "mac": oob_mac(SECRET, "meter-3", stamp, nonce, csr_sha256(request)),
    }
    body = {
        "mechanism": "oob-secret",
        "csr": pem,
        "registration_id": "meter-3",
        "evidence": evidence,
    }
    return of(approved(service, body))


def idprov(service: Service, directory: Path) -> Issued:
    admin_post(
        service, "/api/v1/enrollments", {"id": "idprov", "mechanism": "oob-secret", "owner": "hub"}
    )
    device_id = "AA:BB:CC:DD:EE:FF"
    admin_post(service, "/idprov/oobsecret", {"deviceID": device_id, "oobSecret": SECRET})
    public_key = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )

    def message(signature: str) -> bytes:
        fields = {
            "deviceID": device_id,
            "ip": "192.0.2.7",
            "mac": "",
            "publicKeyPEM": public_key,
            "signature": signature,
        }
        return json.dumps(fields, separators=(",", ":")).encode()

    with service.client() as http:
        response = http.post(
            "/idprov/provreq",
            content=message(idprov_signature(SECRET, message(""))),
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["status"] == "Approved", answer
    return answer["clientCert"], answer["caCert"]


def symmetric_key(service: Service, directory: Path) -> Issued:
    created = admin_post(
        service,
        "/api/v1/enrollments",
        {"id": "thermometers", "mechanism": "symmetric-key", "owner": "acme"},
    )
    device_key = derive_device_key(base64.b64decode(created["group_key"]), "th-1")
    pem, request = make_csr()
    expiry, nonce = int(time.time()) + 300, secrets.token_urlsafe(18)
    token = symmetric_key_token(device_key, "th-1", expiry, nonce, csr_sha256(request))
    body = {
        "mechanism": "symmetric-key",
        "csr": pem,
        "registration_id": "th-1",
        "evidence": {"expiry": expiry, "nonce": nonce, "token": token},
    }
    return of(approved(service, body))


def registration_key(service: Service, directory: Path) -> Issued:
    admin_post(
        service,
        "/api/v1/enrollments",
        {"id": "simpsons", "mechanism": "registration-key", "owner": "the-simpsons"},
    )
    key = admin_post(service, "/api/v1/enrollments/simpsons/registration-key")["key"]
    body = {"mechanism": "registration-key", "csr": make_csr()[0], "registration_id": "74743827342"}
    return of(approved(service, body, headers={"X-Imprint-Key-Half": key.split("-")[0]}))


def renewal(service: Service, directory: Path) -> Issued:
    factory = Factory(service, directory, "renewing")
    key = ec.generate_private_key(ec.SECP256R1())
    first = approved(
        service, {"mechanism": "client-ca", "csr": make_csr(key)[0]}, cert=factory.device("r-1")
    )
    current = write_credentials(directory, "r-1-op", first["certificate_chain"], key)
    renewed = approved(service, {"csr": make_csr()[0]}, cert=current, path="/api/v1/renew")
    assert renewed["serial"] != first["serial"]
    return of(renewed)


MECHANISMS: list[Callable[[Service, Path], Issued]] = [
    x509_over_mutual_tls,
    x509_signed_request,
    client_ca_with_openssl_and_curl,
    oob_secret,
    idprov,
    symmetric_key,
    registration_key,
    renewal,
]


# --- the independent checks ------------------------------------------------------------------


def run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def split_pem(text: str) -> list[str]:
    marker = "-----END CERTIFICATE-----"
    return [part.strip() + f"\n{marker}\n" for part in text.split(marker) if part.strip()]


def pkilint_findings(*args: str | Path, cwd: Path) -> str:
    """pkilint's report at NOTICE and above ('' when there is nothing above INFO)."""
    tool, *rest = args
    result = run(BIN / str(tool), "lint", "-s", "NOTICE", *rest, cwd=cwd)
    assert result.returncode in (0, 1), result.stderr  # 1: findings were reported
    return result.stdout.strip()


@pytest.mark.slow
@pytest.mark.parametrize("provision", MECHANISMS, ids=lambda f: f.__name__.replace("_", "-"))
def test_every_issued_chain_passes_openssl_and_pkilint(
    service: Service, tmp_path: Path, provision: Callable[[Service, Path], Issued]
) -> None:
    directory = tmp_path / "checks"
    directory.mkdir()
    chain_pem, anchor_pem = provision(service, tmp_path)
    chain = split_pem(chain_pem)
    assert len(chain) == 2, "the device certificate, then the issuing CA"
    (directory / "root.pem").write_text(anchor_pem)
    (directory / "chain.pem").write_text(chain_pem)
    for index, certificate in enumerate(chain):
        (directory / f"{index}.pem").write_text(certificate)

    verified = run(
        "openssl", "verify", "-x509_strict", "-purpose", "sslclient",
        "-CAfile", "root.pem", "-untrusted", "chain.pem", "0.pem", cwd=directory,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.strip() == "0.pem: OK"

    leaf = x509.load_pem_x509_certificate(chain[0].encode())
    assert leaf.issuer == x509.load_pem_x509_certificate(chain[1].encode()).subject

    findings = {
        "device certificate": pkilint_findings("lint_pkix_cert", "0.pem", cwd=directory),
        "issuing CA": pkilint_findings("lint_pkix_cert", "1.pem", cwd=directory),
        "issuing CA -> device": pkilint_findings(
            "lint_pkix_signer_signee_cert_chain", "1.pem", "0.pem", cwd=directory
        ),
        "root -> issuing CA": pkilint_findings(
            "lint_pkix_signer_signee_cert_chain", "root.pem", "1.pem", cwd=directory
        ),
    }
    assert findings == dict.fromkeys(findings, "")
