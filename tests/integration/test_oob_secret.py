"""OOB-secret attestation over real HTTPS: registration (single, bulk, CLI), provisioning,
every refusal, and manual approval. The MACs are computed here from the documented
wire format, not with imprint's own helpers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from imprint.provisioning.devices import DeviceStatus
from imprint.provisioning.oob_secrets import OobSecret
from imprint.store.oob_secrets import SqlOobSecretStore
from tests.integration.conftest import Service, with_orgs


@pytest.fixture
def service(service: Service) -> Service:
    """The server, with the organizations this module's enrollments name."""
    return with_orgs(service, "acme")


PROBLEM = "application/problem+json"
SECRET = "s3cret-from-the-label"
Csr = tuple[str, x509.CertificateSigningRequest]


def make_csr(name: str = "device") -> Csr:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode(), csr


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def request_body(
    secret: str,
    device_id: str,
    csr: Csr | None = None,
    *,
    timestamp: int | None = None,
    nonce: str | None = None,
    enrollment_id: str | None = None,
) -> dict[str, Any]:
    """What a device sends: a CSR and a MAC over the labelled fields, keyed with the secret."""
    pem, request = csr or make_csr(device_id)
    timestamp = int(time.time()) if timestamp is None else timestamp
    nonce = nonce or secrets.token_urlsafe(18)
    digest = b64url(hashlib.sha256(request.public_bytes(serialization.Encoding.DER)).digest())
    message = f"imprint-oob-v1\n{device_id}\n{timestamp}\n{nonce}\n{digest}".encode()
    mac = base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()
    body: dict[str, Any] = {
        "mechanism": "oob-secret",
        "csr": pem,
        "registration_id": device_id,
        "evidence": {"timestamp": timestamp, "nonce": nonce, "mac": mac},
    }
    if enrollment_id is not None:
        body["enrollment_id"] = enrollment_id
    return body


def expected_response_mac(secret: str, device_id: str, chain_pem: str) -> str:
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"imprint response mac v1"
    ).derive(secret.encode())
    return b64url(hmac.new(key, f"{device_id}\n{chain_pem}".encode(), hashlib.sha256).digest())


def create_enrollment(client: httpx.Client, **fields: Any) -> str:
    response = client.post(
        "/api/v1/enrollments",
        json={"mechanism": "oob-secret", "owner": "acme", "id": "oob-lab", **fields},
    )
    assert response.status_code == 201, response.text
    enrollment_id: str = response.json()["id"]
    return enrollment_id


def register(
    client: httpx.Client, enrollment_id: str, device_id: str, secret: str = SECRET, **extra: Any
) -> httpx.Response:
    return client.post(
        f"/api/v1/enrollments/{enrollment_id}/oob-secrets",
        json={"device_id": device_id, "secret": secret, **extra},
    )


def store(service: Service) -> SqlOobSecretStore:
    return SqlOobSecretStore(service.runtime.engine, service.runtime.box)


def state(service: Service) -> tuple[int, int, int]:
    """Devices, certificates and OOB secrets: what a refused request must not change."""
    runtime = service.runtime
    return (
        len(runtime.devices.search(limit=10_000)),
        len(runtime.ledger.search(limit=10_000)),
        store(service).count(),
    )


@pytest.mark.both_databases
def test_registered_device_provisions_and_can_check_the_answer(service: Service) -> None:
    with service.admin() as admin:
        enrollment = create_enrollment(admin, generate_pre_shared_key=True)
        created = register(admin, enrollment, "meter-0001")
    assert created.status_code == 201, created.text
    assert created.json()["result"] == "created"
    assert SECRET not in created.text
    with service.client() as client:
        response = client.post("/api/v1/provision", json=request_body(SECRET, "meter-0001"))
    assert response.status_code == 200, response.text
    bundle = response.json()["bundle"]
    assert bundle["device_id"] == "meter-0001"
    assert bundle["enrollment_id"] == enrollment
    certificate = x509.load_pem_x509_certificate(bundle["certificate"].encode())
    assert certificate.subject.rfc4514_string() == "CN=meter-0001,OU=acme"
    # The answer is authenticated with the same secret; the PSK travels sealed.
    assert bundle["response_mac"] == expected_response_mac(
        SECRET, "meter-0001", bundle["certificate_chain"]
    )
    assert bundle["pre_shared_key"] is None
    assert bundle["sealed"] is not None
    used = store(service).get(enrollment, "meter-0001")
    assert used is not None
    assert used.used_at is not None


def test_unknown_device_waits_and_nothing_is_created(service: Service) -> None:
    with service.admin() as admin:
        create_enrollment(admin)
    before = state(service)
    with service.client() as client:
        response = client.post("/api/v1/provision", json=request_body(SECRET, "not-yet-known"))
    assert response.status_code == 202, response.text
    assert response.headers["retry-after"] == "30"
    assert response.json()["status"] == "pending"
    assert state(service) == before


REFUSALS = [
    ("wrong-secret", 403, "signature_invalid"),
    ("other-device-mac", 403, "signature_invalid"),
    ("mac-over-other-csr", 403, "signature_invalid"),
    ("stale", 403, "request_expired"),
    ("future", 403, "request_expired"),
    ("short-nonce", 400, "value_invalid"),
    ("no-mac", 400, "evidence_missing"),
    ("mac-not-base64", 400, "value_invalid"),
    ("no-registration-id", 400, "evidence_missing"),
    ("foreign-enrollment", 403, "not_enrolled"),
]


def refused_body(case: str) -> dict[str, Any]:
    now = int(time.time())
    if case == "wrong-secret":
        return request_body("not-the-secret", "meter-7")
    if case == "other-device-mac":
        return {**request_body(SECRET, "meter-8"), "registration_id": "meter-7"}
    if case == "mac-over-other-csr":
        return {**request_body(SECRET, "meter-7"), "csr": make_csr("meter-7")[0]}
    if case in ("stale", "future"):
        return request_body(
            SECRET, "meter-7", timestamp=now - 301 if case == "stale" else now + 400
        )
    if case == "short-nonce":
        return request_body(SECRET, "meter-7", nonce="too-short")
    if case == "foreign-enrollment":
        return request_body(SECRET, "meter-7", enrollment_id="sym")
    body = request_body(SECRET, "meter-7")
    if case == "no-mac":
        del body["evidence"]["mac"]
    if case == "mac-not-base64":
        body["evidence"]["mac"] = "%%%not base64%%%"
    if case == "no-registration-id":
        del body["registration_id"]
    return body


def test_refused_requests_change_nothing_and_are_rate_limited(service: Service) -> None:
    with service.admin() as admin:
        enrollment = create_enrollment(admin)
        assert register(admin, enrollment, "meter-7").status_code == 201
        admin.post(
            "/api/v1/enrollments",
            json={"mechanism": "symmetric-key", "owner": "acme", "id": "sym"},
        )
    before = state(service)
    with service.client() as client:
        for case, status, code in REFUSALS:
            response = client.post("/api/v1/provision", json=refused_body(case))
            assert response.status_code == status, (case, response.text)
            assert response.headers["content-type"] == PROBLEM
            assert response.json()["code"] == code, case
            assert SECRET not in response.text
            assert state(service) == before, case
        # Ten failures at this device from this address within a minute: the next try
        # from here waits, even a good one (a secret can be guessed; decision 0009).
        tenth = client.post("/api/v1/provision", json=refused_body("wrong-secret"))
        assert tenth.json()["code"] == "signature_invalid"
        limited = client.post("/api/v1/provision", json=request_body(SECRET, "meter-7"))
    assert limited.status_code == 429
    assert limited.json()["code"] == "too_many_attempts"
    assert int(limited.headers["retry-after"]) > 0
    secret = store(service).get(enrollment, "meter-7")
    assert secret is not None
    assert secret.used_at is None


def test_a_replayed_request_is_refused(service: Service) -> None:
    with service.admin() as admin:
        enrollment = create_enrollment(admin)
        register(admin, enrollment, "meter-9")
    body = request_body(SECRET, "meter-9")
    with service.client() as client:
        first = client.post("/api/v1/provision", json=body)
        before = state(service)
        replay = client.post("/api/v1/provision", json=body)
    assert first.status_code == 200, first.text
    assert replay.status_code == 403
    assert replay.json()["code"] == "replay_detected"
    assert state(service) == before


def test_an_expired_secret_is_refused(service: Service) -> None:
    with service.admin() as admin:
        enrollment = create_enrollment(admin)
    past = datetime.now(UTC) - timedelta(minutes=1)
    store(service).write(
        [OobSecret(enrollment, "meter-old", SECRET, valid_until=past, created_at=past)], []
    )
    before = state(service)
    with service.client() as client:
        response = client.post("/api/v1/provision", json=request_body(SECRET, "meter-old"))
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "secret_expired"
    assert state(service) == before


def test_a_used_secret_serves_the_same_key_again_and_refuses_another(service: Service) -> None:
    with service.admin() as admin:
        enrollment = create_enrollment(admin)
        register(admin, enrollment, "meter-5")
    first_csr = make_csr("meter-5")
    with service.client() as client:
        first = client.post("/api/v1/provision", json=request_body(SECRET, "meter-5", first_csr))
        retry = client.post("/api/v1/provision", json=request_body(SECRET, "meter-5", first_csr))
        before = state(service)
        other = client.post("/api/v1/provision", json=request_body(SECRET, "meter-5"))
    assert first.status_code == 200, first.text
    assert retry.status_code == 200, retry.text
    assert retry.json()["bundle"]["serial"] == first.json()["bundle"]["serial"]
    assert other.status_code == 403
    assert other.json()["code"] == "secret_used"
    assert state(service) == before
    # A new secret opens the door again, for a new key.
    with service.admin() as admin:
        renewed = register(admin, enrollment, "meter-5", "a-brand-new-secret")
    assert renewed.json()["result"] == "updated"
    with service.client() as client:
        again = client.post("/api/v1/provision", json=request_body("a-brand-new-secret", "meter-5"))
    assert again.status_code == 200, again.text
    assert again.json()["bundle"]["serial"] != first.json()["bundle"]["serial"]


def test_a_factory_reset_lets_the_same_secret_provision_again(service: Service) -> None:
    with service.admin() as admin:
        enrollment = create_enrollment(admin)
        register(admin, enrollment, "meter-6")
    with service.client() as client:
        first = client.post("/api/v1/provision", json=request_body(SECRET, "meter-6"))
    assert first.status_code == 200, first.text
    device = service.runtime.devices.find("acme", "meter-6")
    assert device is not None
    with service.admin() as admin:
        reset = admin.post(f"/api/v1/devices/{device.id}/reset")
    assert reset.status_code == 200, reset.text
    with service.client() as client:
        again = client.post("/api/v1/provision", json=request_body(SECRET, "meter-6"))
    assert again.status_code == 200, again.text


@pytest.mark.both_databases
def test_a_secret_attests_only_where_its_enrollment_admits_the_device(service: Service) -> None:
    with service.admin() as admin:
        lab = create_enrollment(admin)
        off = create_enrollment(admin, id="oob-off")
        other = create_enrollment(admin, id="oob-other")
        solo = create_enrollment(
            admin, id="oob-solo", kind="individual", registration_id="meter-solo"
        )
        assert register(admin, off, "meter-20", "a-disabled-groups-secret").status_code == 201
        assert admin.post(f"/api/v1/enrollments/{off}/disable").status_code == 200
        assert register(admin, lab, "meter-21").status_code == 201
        assert register(admin, solo, "meter-solo", "a-solo-secret").status_code == 201
    before = state(service)
    with service.client() as client:
        disabled = client.post(
            "/api/v1/provision", json=request_body("a-disabled-groups-secret", "meter-20")
        )
        elsewhere = client.post(
            "/api/v1/provision", json=request_body(SECRET, "meter-21", enrollment_id=other)
        )
        wrong = client.post("/api/v1/provision", json=request_body("a-solo-secret", "meter-21"))
        assert state(service) == before
        named = client.post(
            "/api/v1/provision", json=request_body(SECRET, "meter-21", enrollment_id=lab)
        )
        alone = client.post("/api/v1/provision", json=request_body("a-solo-secret", "meter-solo"))
    # A disabled group's secret attests nothing, nor does a secret held in another
    # enrollment than the one named: the device waits for a secret where it may enroll.
    assert disabled.status_code == 202, disabled.text
    assert elsewhere.status_code == 202, elsewhere.text
    # Another device's individual enrollment does not lend its secret.
    assert wrong.status_code == 403, wrong.text
    assert wrong.json()["code"] == "signature_invalid"
    assert named.status_code == 200, named.text
    assert named.json()["bundle"]["enrollment_id"] == lab
    assert alone.status_code == 200, alone.text
    assert alone.json()["bundle"]["enrollment_id"] == solo


def test_manual_approval_holds_the_device_until_an_administrator_approves(
    service: Service,
) -> None:
    with service.admin() as admin:
        enrollment = create_enrollment(admin, manual_approval=True)
        register(admin, enrollment, "meter-3")
    csr = make_csr("meter-3")
    with service.client() as client:
        waiting = client.post("/api/v1/provision", json=request_body(SECRET, "meter-3", csr))
    assert waiting.status_code == 202, waiting.text
    secret = store(service).get(enrollment, "meter-3")
    assert secret is not None
    assert secret.used_at is None  # nothing issued yet: the secret is not spent
    with service.admin() as admin:
        pending = admin.get("/api/v1/devices", params={"status": "pending"}).json()["items"]
        assert [d["device_id"] for d in pending] == ["meter-3"]
        approved = admin.post(f"/api/v1/devices/{pending[0]['id']}/approve")
    assert approved.status_code == 200, approved.text
    with service.client() as client:
        issued = client.post("/api/v1/provision", json=request_body(SECRET, "meter-3", csr))
    assert issued.status_code == 200, issued.text
    device = service.runtime.devices.find("acme", "meter-3")
    assert device is not None
    assert device.status is DeviceStatus.PROVISIONED


def test_single_registration_is_idempotent_and_never_echoes_the_secret(
    service: Service,
) -> None:
    until = (datetime.now(UTC) + timedelta(days=10)).replace(microsecond=0)
    with service.admin() as admin:
        enrollment = create_enrollment(admin)
        created = register(admin, enrollment, "dev-1", valid_until=until.isoformat())
        same = register(admin, enrollment, "dev-1")
        moved = register(
            admin, enrollment, "dev-1", valid_until=(until + timedelta(days=1)).isoformat()
        )
        replaced = register(admin, enrollment, "dev-1", "another-secret")
        listed = admin.get(f"/api/v1/enrollments/{enrollment}/oob-secrets")
        removed = admin.delete(f"/api/v1/enrollments/{enrollment}/oob-secrets/dev-1")
        gone = admin.delete(f"/api/v1/enrollments/{enrollment}/oob-secrets/dev-1")
    assert (created.status_code, created.json()["result"]) == (201, "created")
    assert datetime.fromisoformat(created.json()["valid_until"]) == until
    assert (same.status_code, same.json()["result"]) == (200, "unchanged")
    assert same.json()["valid_until"] == created.json()["valid_until"]
    assert moved.json()["result"] == "updated"
    assert replaced.json()["result"] == "updated"
    # A new secret starts a fresh default validity of three days.
    fresh = datetime.fromisoformat(replaced.json()["valid_until"])
    assert abs(fresh - (datetime.now(UTC) + timedelta(days=3))) < timedelta(minutes=1)
    assert [i["device_id"] for i in listed.json()["items"]] == ["dev-1"]
    for response in (created, same, moved, replaced, listed):
        assert SECRET not in response.text
        assert "another-secret" not in response.text
    assert removed.status_code == 204
    assert gone.status_code == 404


BAD_REGISTRATIONS: list[tuple[str, dict[str, Any], int, str]] = [
    ("oob-lab", {"device_id": "d", "secret": "short"}, 400, "value_invalid"),
    ("oob-lab", {"device_id": "has space", "secret": SECRET}, 400, "value_invalid"),
    ("oob-lab", {"device_id": "d", "secret": SECRET, "valid_until": "2001-01-01"}, 400,
     "value_invalid"),
    ("oob-lab", {"device_id": "d"}, 400, "request_invalid"),
    ("sym", {"device_id": "d", "secret": SECRET}, 400, "enrollment_mechanism_mismatch"),
    ("nope", {"device_id": "d", "secret": SECRET}, 404, "not_found"),
]  # fmt: skip


def test_bad_registrations_are_refused_and_store_nothing(service: Service) -> None:
    with service.admin() as admin:
        create_enrollment(admin)
        admin.post(
            "/api/v1/enrollments",
            json={"mechanism": "symmetric-key", "owner": "acme", "id": "sym"},
        )
        for enrollment, body, status, code in BAD_REGISTRATIONS:
            response = admin.post(f"/api/v1/enrollments/{enrollment}/oob-secrets", json=body)
            assert response.status_code == status, response.text
            assert response.headers["content-type"] == PROBLEM
            assert response.json()["code"] == code
            assert SECRET not in response.text
    assert store(service).count() == 0
    with service.client() as client:
        anonymous = client.post(
            "/api/v1/enrollments/oob-lab/oob-secrets", json={"device_id": "d", "secret": SECRET}
        )
    assert anonymous.status_code == 401
    assert store(service).count() == 0


@pytest.mark.both_databases
def test_bulk_dry_run_then_import_then_reimport(service: Service) -> None:
    rows = [{"device_id": f"bulk-{i:03d}", "secret": f"secret-number-{i:03d}"} for i in range(50)]
    with service.admin() as admin:
        enrollment = create_enrollment(admin)
        url = f"/api/v1/enrollments/{enrollment}/oob-secrets:bulk"
        dry = admin.post(url, params={"dry_run": "true"}, json=rows)
        assert store(service).count() == 0
        done = admin.post(url, json=rows)
        again = admin.post(url, json=rows)
        rows[0] = {**rows[0], "secret": "changed-secret-000"}
        changed_dry = admin.post(url, params={"dry_run": "true"}, json=rows)
        changed = admin.post(url, json=rows)
    assert dry.status_code == 200, dry.text
    assert (dry.json()["created"], dry.json()["written"], dry.json()["dry_run"]) == (
        50,
        False,
        True,
    )
    assert (done.json()["created"], done.json()["written"]) == (50, True)
    assert (again.json()["unchanged"], again.json()["created"], again.json()["updated"]) == (
        50,
        0,
        0,
    )
    assert (changed_dry.json()["updated"], changed_dry.json()["unchanged"]) == (1, 49)
    assert changed.json()["updated"] == 1
    assert store(service).count() == 50
    stored = store(service).get(enrollment, "bulk-000")
    assert stored is not None
    assert stored.secret == "changed-secret-000"


@pytest.mark.slow
def test_bulk_bodies_may_pass_the_general_limit_up_to_the_upload_limit(
    service: Service,
) -> None:
    settings = service.runtime.settings.server
    rows = [
        {"device_id": f"meter-{i:06d}", "secret": f"secret-of-meter-{i:06d}"} for i in range(30_000)
    ]
    body = json.dumps(rows).encode()
    assert settings.max_body_bytes < len(body) < settings.max_upload_bytes
    with service.admin() as admin:
        enrollment = create_enrollment(admin)
        url = f"/api/v1/enrollments/{enrollment}/oob-secrets:bulk"
        headers = {"content-type": "application/json"}
        dry = admin.post(url, params={"dry_run": "true"}, content=body, headers=headers)
        # Any other route keeps the general limit.
        other = admin.post("/api/v1/enrollments", content=body, headers=headers)
        huge = b"[" + b" " * settings.max_upload_bytes + b"]"
        too_big = admin.post(url, content=huge, headers=headers)
    with service.client() as anybody:  # without credentials the general limit holds
        anonymous = anybody.post(url, content=body, headers=headers)
    assert dry.status_code == 200, dry.text
    assert dry.json()["created"] == 30_000
    assert (other.status_code, other.json()["code"]) == (413, "body_too_large")
    assert (too_big.status_code, too_big.json()["code"]) == (413, "body_too_large")
    assert f"limited to {settings.max_upload_bytes} bytes" in too_big.json()["detail"]
    assert (anonymous.status_code, anonymous.json()["code"]) == (413, "body_too_large")
    assert store(service).count() == 0


def test_bulk_with_a_bad_row_writes_nothing_and_names_each_line(service: Service) -> None:
    rows: list[Any] = [{"device_id": f"ok-{i}", "secret": f"fine-secret-{i}"} for i in range(5)]
    rows[1] = {"device_id": "ok-1", "secret": "tiny"}
    rows.append({"device_id": "ok-0", "secret": "duplicate-row"})
    rows.append("not an object")
    rows.append({"device_id": "x", "secret": SECRET, "colour": "blue"})
    with service.admin() as admin:
        enrollment = create_enrollment(admin)
        url = f"/api/v1/enrollments/{enrollment}/oob-secrets:bulk"
        response = admin.post(url, json=rows)
        dry = admin.post(url, params={"dry_run": "true"}, json=rows)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["code"] == "oob_rows_invalid"
    assert problem["written"] is False
    assert [(p["line"], p["field"]) for p in problem["invalid"]] == [
        (2, "secret"),
        (6, "device_id"),
        (7, None),
        (8, None),
    ]
    assert "tiny" not in response.text
    assert store(service).count() == 0
    # A dry run reports the same problems and what the valid rows would do.
    assert dry.status_code == 200
    assert dry.json()["created"] == 4
    assert len(dry.json()["invalid"]) == 4


@pytest.mark.slow
def test_cli_imports_twenty_thousand_rows_then_recognises_them(
    service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imprint.cli.oob import app

    settings = service.runtime.settings
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IMPRINT_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("IMPRINT_DATABASE__URL", settings.database_url())
    monkeypatch.setenv("IMPRINT_CA__PASSPHRASE", "test-passphrase")
    with service.admin() as admin:
        enrollment = create_enrollment(admin)
    csv_file = tmp_path / "secrets.csv"
    lines = ["device_id,secret,valid_until"]
    lines += [f"unit-{i:05d},label-secret-{i:05d}," for i in range(20_000)]
    csv_file.write_text("\n".join(lines) + "\n")
    runner = CliRunner()

    dry = runner.invoke(app, ["import", enrollment, str(csv_file), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "20000 would be created" in dry.output
    assert store(service).count() == 0
    imported = runner.invoke(app, ["import", enrollment, str(csv_file)])
    assert imported.exit_code == 0, imported.output
    assert "20000 created" in imported.output
    assert store(service).count() == 20_000

    again = runner.invoke(app, ["import", enrollment, str(csv_file)])
    assert "20000 unchanged" in again.output
    lines[3] = "unit-00002,tiny,"
    lines[5] = "unit-00004,ok-secret-xx,not-a-date"
    csv_file.write_text("\n".join(lines) + "\n")
    bad = runner.invoke(app, ["import", enrollment, str(csv_file)])
    assert bad.exit_code == 1
    assert "2 invalid" in bad.output
    json_file = tmp_path / "more.json"
    json_file.write_text(json.dumps([{"device_id": "json-1", "secret": "json-secret-1"}]))
    added = runner.invoke(app, ["import", enrollment, str(json_file)])
    assert "1 created" in added.output
    single = runner.invoke(app, ["add", enrollment, "solo-1", "--secret", "solo-secret-1"])
    assert single.exit_code == 0, single.output
    assert "solo-1: created" in single.output
    assert store(service).count() == 20_002

    # The CSV file is read as it is checked: a bad byte far down still writes nothing.
    broken = tmp_path / "broken.csv"
    broken.write_bytes(
        "\n".join(
            ["device_id,secret", *(f"late-{i:05d},late-secret-{i:05d}" for i in range(9000))]
        ).encode()
        + b"\nlate-x,\xff\xfe-not-utf-8\n"
    )
    unreadable = runner.invoke(app, ["import", enrollment, str(broken)])
    assert unreadable.exit_code == 1
    assert f"cannot read {broken}" in unreadable.output
    no_header = tmp_path / "no-header.csv"
    no_header.write_text("unit-1,some-secret-1\n")
    headless = runner.invoke(app, ["import", enrollment, str(no_header)])
    assert headless.exit_code == 1
    assert "the CSV header must be device_id,secret" in headless.output
    assert store(service).count() == 20_002
