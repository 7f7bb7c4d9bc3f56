"""The HTTP API over real HTTPS: issuing, listing, revoking, CRLs, and refusing bad input."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from imprint.audit import AuditQuery
from imprint.auth.bearer import LAST_USED_RESOLUTION
from imprint.pki.records import CertificateStatus
from tests.integration.conftest import Service

PROBLEM = "application/problem+json"


def make_csr(common_name: str = "device-1") -> tuple[str, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode(), key


def record_count(service: Service) -> int:
    return len(service.runtime.ledger.search(limit=10_000))


def test_admin_endpoints_need_an_api_key(service: Service) -> None:
    with service.client() as client:
        missing = client.get("/api/v1/certificates")
        wrong = client.get(
            "/api/v1/certificates", headers={"Authorization": "Bearer imp_0000_nope"}
        )
    for response in (missing, wrong):
        assert response.status_code == 401
        assert response.headers["content-type"] == PROBLEM
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["code"] == "authentication_required"


def test_an_api_key_records_its_last_use_to_the_minute(service: Service) -> None:
    """The first request writes last_used_at; a burst within the minute does not write
    again; a request a minute after the stored value does."""
    keys = service.runtime.api_keys
    (key,) = [k for k in keys.all() if k.name == "admin"]
    with service.admin() as admin:
        assert admin.get("/api/v1/whoami").status_code == 200
        first = keys.find(key.key_id)
        assert first is not None
        assert first.last_used_at is not None
        for _ in range(5):
            assert admin.get("/api/v1/whoami").status_code == 200
        assert keys.find(key.key_id).last_used_at == first.last_used_at  # type: ignore[union-attr]
        keys.touch(key.key_id, first.last_used_at - LAST_USED_RESOLUTION)
        assert admin.get("/api/v1/whoami").status_code == 200
    later = keys.find(key.key_id)
    assert later is not None
    assert later.last_used_at is not None
    assert later.last_used_at >= first.last_used_at


@pytest.mark.both_databases
def test_issue_then_openssl_verifies_the_chain(service: Service, tmp_path: Path) -> None:
    csr, _key = make_csr("meter-7")
    with service.admin() as client:
        response = client.post("/api/v1/certificates", json={"csr": csr, "profile": "device"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["subject"] == "CN=meter-7"
    assert body["status"] == "issued"
    assert body["requested_by"] == "api-key:admin"
    leaf = tmp_path / "leaf.pem"
    leaf.write_text(body["certificate"])
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
    assert result.stdout.strip().endswith("OK")
    # The chain in the answer starts with the leaf and ends with the root.
    chain = x509.load_pem_x509_certificates(body["chain"].encode())
    assert format(chain[0].serial_number, "x") == body["serial"]
    assert chain[-1] == service.runtime.authority.material.root


def test_revoked_serial_appears_in_the_served_crl(service: Service, tmp_path: Path) -> None:
    csr, _key = make_csr("to-revoke")
    with service.admin() as client:
        serial = client.post("/api/v1/certificates", json={"csr": csr}).json()["serial"]
        revoked = client.post(
            f"/api/v1/certificates/{serial}/revoke", json={"reason": "keyCompromise"}
        )
        again = client.post(f"/api/v1/certificates/{serial}/revoke", json={})
    assert revoked.status_code == 200
    assert revoked.json()["status"] == "revoked"
    assert again.status_code == 409
    assert again.json()["code"] == "already_revoked"
    # The issue and the revocation are audited; the refused second revocation is not.
    logged = service.runtime.audit.search(AuditQuery(target_id=serial))
    assert [(e.action, e.actor, e.details) for e in logged] == [
        ("certificate.revoke", "api-key:admin", {"reason": "keyCompromise"}),
        ("certificate.issue", "api-key:admin", {}),
    ]

    with service.client() as client:
        der = client.get("/crl/issuing.crl")
        pem = client.get("/crl/issuing.pem")
    assert der.headers["content-type"] == "application/pkix-crl"
    crl_file = tmp_path / "issuing.crl"
    crl_file.write_bytes(der.content)
    text = subprocess.run(
        ["openssl", "crl", "-inform", "DER", "-in", str(crl_file), "-noout", "-text"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"Serial Number: {serial.upper().zfill(34)}" in text
    assert "Key Compromise" in text
    assert "Next Update" in text
    crl = x509.load_pem_x509_crl(pem.content)
    assert crl.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None
    assert crl.is_signature_valid(service.runtime.authority.material.issuing.public_key())  # type: ignore[arg-type]


def test_issued_certificate_points_at_a_crl_that_is_served(service: Service) -> None:
    csr, _key = make_csr("dp-check")
    with service.admin() as client:
        pem = client.post("/api/v1/certificates", json={"csr": csr}).json()["certificate"]
    certificate = x509.load_pem_x509_certificate(pem.encode())
    points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    url = points[0].full_name[0].value  # type: ignore[index]
    assert url.startswith(service.base_url + "/crl/")
    with service.client() as client:
        assert client.get(url.removeprefix(service.base_url)).status_code == 200


@pytest.mark.both_databases
def test_list_filters_by_expiry_and_pages(service: Service) -> None:
    with service.admin() as client:
        for index in range(3):
            csr, _key = make_csr(f"short-{index}")
            client.post("/api/v1/certificates", json={"csr": csr, "validity_days": 5})
        csr, _key = make_csr("long")
        client.post("/api/v1/certificates", json={"csr": csr, "validity_days": 60})
        soon = client.get("/api/v1/certificates", params={"expiring_within": "7d"}).json()
        first = client.get("/api/v1/certificates", params={"limit": 2}).json()
        second = client.get("/api/v1/certificates", params={"limit": 2, "after": first["next"]})
        bad = client.get("/api/v1/certificates", params={"expiring_within": "soon"})
    assert sorted(item["subject"] for item in soon["items"]) == [
        "CN=short-0",
        "CN=short-1",
        "CN=short-2",
    ]
    assert len(first["items"]) == 2
    assert first["next"] is not None
    seen = {i["serial"] for i in first["items"]} | {i["serial"] for i in second.json()["items"]}
    assert len(seen) == 4
    assert bad.status_code == 400
    assert bad.json()["code"] == "value_invalid"


def _corrupt_signature(pem: str) -> str:
    csr = x509.load_pem_x509_csr(pem.encode())
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # inside the signature BIT STRING
    return x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"csr": "garbage"}, 400, "csr_invalid"),
        ({"csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END"}, 400, "csr_invalid"),
        ("bad-signature", 400, "csr_signature_invalid"),
        ("unknown-profile", 400, "profile_unknown"),
        ("server-without-san", 400, "value_invalid"),
        ({"csr": 42}, 400, "request_invalid"),
        ({"profile": "device"}, 400, "request_invalid"),
        ("extra-field", 400, "request_invalid"),
        ("long-cn", 400, "request_invalid"),
    ],
)
def test_bad_issue_requests_get_problem_json_and_change_nothing(
    service: Service, payload: object, status: int, code: str
) -> None:
    good_csr, _key = make_csr()
    named = {
        "bad-signature": {"csr": _corrupt_signature(good_csr)},
        "unknown-profile": {"csr": good_csr, "profile": "toaster"},
        "server-without-san": {"csr": good_csr, "profile": "server"},
        "extra-field": {"csr": good_csr, "is_ca": True},
        "long-cn": {"csr": good_csr, "common_name": "x" * 65},
    }
    body = named.get(payload, payload) if isinstance(payload, str) else payload
    before = record_count(service)
    with service.admin() as client:
        response = client.post("/api/v1/certificates", json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["code"] == code
    assert problem["status"] == status
    assert "Traceback" not in response.text
    assert record_count(service) == before


def test_huge_body_is_refused_with_413(service: Service) -> None:
    before = record_count(service)
    with service.admin() as client:
        response = client.post(
            "/api/v1/certificates",
            content=b'{"csr": "' + b"A" * 2_000_000 + b'"}',
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 413
    assert response.json()["code"] == "body_too_large"
    assert record_count(service) == before


def test_chunked_huge_body_is_refused_too(service: Service) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"csr": "'
        for _ in range(40):
            yield b"A" * 65536
        yield b'"}'

    with service.admin() as client:
        response = client.post(
            "/api/v1/certificates", content=chunks(), headers={"content-type": "application/json"}
        )
    assert response.status_code == 413
    assert response.json()["code"] == "body_too_large"


def test_unknown_things_are_problem_json(service: Service) -> None:
    with service.admin() as client:
        route = client.get("/no/such/route")
        serial = client.get("/api/v1/certificates/abcdef")
        crl = client.get("/crl/nobody.crl")
        method = client.delete("/healthz")
    assert (route.status_code, route.json()["code"]) == (404, "not_found")
    assert (serial.status_code, serial.json()["code"]) == (404, "not_found")
    assert (crl.status_code, crl.json()["code"]) == (404, "not_found")
    assert (method.status_code, method.json()["code"]) == (405, "method_not_allowed")
    for response in (route, serial, crl, method):
        assert response.headers["content-type"] == PROBLEM


@pytest.mark.slow
def test_readiness_docs_and_ca_downloads(service: Service) -> None:
    with service.client() as client:
        ready = client.get("/readyz")
        docs = client.get("/docs")
        spec = client.get("/openapi.json")
        root = client.get("/ca/root.pem")
        issuing = client.get("/ca/issuing.crt")
        chain = client.get("/ca/chain.pem")
    assert ready.status_code == 200
    assert ready.json()["database"] == "ok"
    assert docs.status_code == 200
    assert "/api/v1/certificates" in spec.json()["paths"]
    material = service.runtime.authority.material
    assert x509.load_pem_x509_certificate(root.content) == material.root
    assert x509.load_der_x509_certificate(issuing.content) == material.issuing
    assert len(x509.load_pem_x509_certificates(chain.content)) == 2


def test_metrics_count_requests_and_certificates(service: Service) -> None:
    csr, _key = make_csr("counted")
    with service.admin() as client:
        serial = client.post("/api/v1/certificates", json={"csr": csr}).json()["serial"]
        client.post(f"/api/v1/certificates/{serial}/revoke", json={"reason": "superseded"})
        text = client.get("/metrics").text
    assert 'imprint_certificates_issued_total{profile="device"}' in text
    assert 'imprint_certificates_revoked_total{reason="superseded"} 1.0' in text
    assert (
        'imprint_http_requests_total{method="POST",route="/api/v1/certificates",status="201"}'
        in text
    )
    assert "imprint_http_request_duration_seconds_bucket" in text
    # The signing committed in a commit group on SQLite (PostgreSQL has none): counted
    # with its members and the time it held the writer lock.
    groups = _sample(text, "imprint_commit_group_members_count")
    held = _sample(text, "imprint_writer_lock_held_seconds_count")
    if service.runtime.engine.dialect.name == "sqlite":
        assert groups >= 1
        assert _sample(text, "imprint_commit_group_members_sum") >= groups
        assert held == groups
    else:
        assert groups == held == 0


def _sample(exposition: str, name: str) -> float:
    """The value of the sample ``name`` (without labels) in a Prometheus exposition."""
    (value,) = [line.split()[1] for line in exposition.splitlines() if line.startswith(f"{name} ")]
    return float(value)


def test_secrets_stay_out_of_logs_and_errors(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    with service.client() as client:
        response = client.get(
            "/api/v1/certificates?api_key=hunter2",
            headers={"Authorization": f"Bearer {service.admin_token}x"},
        )
    assert response.status_code == 401
    assert service.admin_token not in response.text
    logged = caplog.text
    assert service.admin_token not in logged
    assert "hunter2" not in logged


def test_ledger_records_every_issued_certificate(service: Service) -> None:
    csr, _key = make_csr("ledgered")
    with service.admin() as client:
        body = client.post("/api/v1/certificates", json={"csr": csr}).json()
    record = service.runtime.ledger.get(body["serial"])
    assert record.status is CertificateStatus.ISSUED
    assert record.der is not None
    assert (
        x509.load_der_x509_certificate(record.der).public_bytes(serialization.Encoding.PEM).decode()
        == body["certificate"]
    )


def test_serials_are_found_as_openssl_prints_them(service: Service) -> None:
    csr, _key = make_csr("padded")
    with service.admin() as client:
        serial = client.post("/api/v1/certificates", json={"csr": csr}).json()["serial"]
        as_openssl = "0" + serial.upper()
        with_colons = ":".join(as_openssl[i : i + 2] for i in range(0, len(as_openssl), 2))
        shown = client.get(f"/api/v1/certificates/{with_colons}")
        revoked = client.post(f"/api/v1/certificates/{as_openssl}/revoke")
        garbage = client.get("/api/v1/certificates/not-hex")
    assert shown.status_code == 200
    assert shown.json()["serial"] == serial
    assert revoked.status_code == 200
    assert revoked.json()["revocation_reason"] == "unspecified"
    assert (garbage.status_code, garbage.json()["code"]) == (400, "request_invalid")


def test_unknown_ca_file_is_404(service: Service) -> None:
    with service.client() as client:
        response = client.get("/ca/chain.crt")
    assert (response.status_code, response.json()["code"]) == (404, "not_found")
