"""Registration keys over real HTTPS: the midPoint key-distribution story, done right."""

from __future__ import annotations

import getpass
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from imprint.audit import AuditQuery
from imprint.cli.regkey import app as regkey_app
from imprint.provisioning.bundle import open_for_device, response_mac
from imprint.store.registration_keys import SqlRegistrationKeyStore
from tests.integration.conftest import Service, ensure_org, with_orgs


@pytest.fixture
def service(service: Service) -> Service:
    """The server, with the organizations this module's enrollments name."""
    return with_orgs(service, "o", "the-simpsons")


PROBLEM = "application/problem+json"
SERIAL = "74743827342"


def make_csr() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "thermometer")]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def enrollment_with_key(admin: httpx.Client, enrollment_id: str, owner: str, **fields: Any) -> str:
    """A registration-key group with a pre-shared key; returns its registration key."""
    ensure_org(admin, owner)
    created = admin.post(
        "/api/v1/enrollments",
        json={
            "id": enrollment_id,
            "mechanism": "registration-key",
            "owner": owner,
            "generate_pre_shared_key": True,
            **fields,
        },
    )
    assert created.status_code == 201, created.text
    issued = admin.post(f"/api/v1/enrollments/{enrollment_id}/registration-key")
    assert issued.status_code == 201, issued.text
    assert issued.headers["cache-control"] == "no-store"
    key: str = issued.json()["key"]
    return key


def provision(
    client: httpx.Client,
    serial: str,
    half: str | None,
    *,
    header: bool = False,
    enrollment_id: str | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {
        "mechanism": "registration-key",
        "csr": make_csr(),
        "registration_id": serial,
        "evidence": {} if header or half is None else {"key_half": half},
    }
    if enrollment_id is not None:
        body["enrollment_id"] = enrollment_id
    headers = {"X-Imprint-Key-Half": half} if header and half is not None else {}
    return client.post("/api/v1/provision", json=body, headers=headers)


def counts(service: Service) -> tuple[int, int]:
    runtime = service.runtime
    return len(runtime.devices.search(limit=10_000)), len(runtime.ledger.search(limit=10_000))


def refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["code"] == code


@pytest.mark.both_databases
def test_a_device_provisions_and_opens_its_sealed_psk(service: Service) -> None:
    with service.admin() as admin:
        key = enrollment_with_key(admin, "simpsons", "the-simpsons")
        shown = admin.get("/api/v1/enrollments/simpsons/registration-key")
    first, second = key.split("-")
    assert len(first) == len(second) == 8
    assert shown.status_code == 200
    assert shown.json()["keys"][0]["first_half"] == first
    assert shown.json()["keys"][0]["state"] == "current"
    assert second not in shown.text
    psk = service.runtime.enrollments.get("simpsons").pre_shared_key
    assert psk is not None
    with service.client() as client:
        in_body = provision(client, SERIAL, first)
        in_header = provision(client, "74743827343", first, header=True)
    for response, serial in ((in_body, SERIAL), (in_header, "74743827343")):
        assert response.status_code == 200, response.text
        bundle = response.json()["bundle"]
        assert bundle["device_id"] == serial
        assert bundle["owner"] == "the-simpsons"
        assert bundle["pre_shared_key"] is None  # only sealed, for the holder of the key
        assert psk not in response.text
        # The device side: the second half never left it, and opens what the server sealed.
        opened = open_for_device(second.encode("ascii"), serial, bundle["sealed"])
        assert opened == {"pre_shared_key": psk}
        expected = response_mac(second.encode("ascii"), serial, bundle["certificate_chain"])
        assert bundle["response_mac"] == expected
    device = service.runtime.devices.find("the-simpsons", SERIAL)
    assert device is not None
    assert device.mechanism == "registration-key"


@pytest.mark.both_databases
def test_racing_first_requests_with_one_key_get_one_certificate(service: Service) -> None:
    with service.admin() as admin:
        key = enrollment_with_key(admin, "racers", "acme")
    first, _second = key.split("-")
    body = {
        "mechanism": "registration-key",
        "csr": make_csr(),
        "registration_id": "race-1",
        "evidence": {"key_half": first},
    }

    def one(_: int) -> httpx.Response:
        with service.client() as client:
            return client.post("/api/v1/provision", json=body)

    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(one, range(6)))
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    serials = {a.json()["bundle"]["serial"] for a in answers}
    assert len(serials) == 1  # every request got the one certificate handed out
    device = service.runtime.devices.find("acme", "race-1")
    assert device is not None
    assert device.certificate_serial in serials
    # A certificate issued by a request that lost the race was never handed out: revoked.
    issued = [r for r in service.runtime.ledger.search(limit=10_000) if "CN=race-1" in r.subject]
    live = [r for r in issued if r.status.value == "issued"]
    assert [r.serial for r in live] == [device.certificate_serial]
    assert all(r.revocation_reason == "superseded" for r in issued if r not in live)


def test_wrong_or_missing_halves_create_nothing(service: Service) -> None:
    with service.admin() as admin:
        key = enrollment_with_key(admin, "simpsons", "the-simpsons")
        other = enrollment_with_key(admin, "flanders", "the-flanders")
    before = counts(service)
    first, second = key.split("-")
    with service.client() as client:
        wrong = provision(client, SERIAL, "ZZZZ9999" if first != "ZZZZ9999" else "YYYY9999")
        second_half = provision(client, SERIAL, second)
        wrong_header = provision(client, SERIAL, first[::-1] + "A", header=True)
        malformed = provision(client, SERIAL, "hq481047")
        missing = provision(client, SERIAL, None)
        no_serial = client.post(
            "/api/v1/provision",
            json={
                "mechanism": "registration-key",
                "csr": make_csr(),
                "evidence": {"key_half": first},
            },
        )
        other_enrollment = provision(client, SERIAL, other.split("-")[0], enrollment_id="simpsons")
    for response in (wrong, second_half, wrong_header, other_enrollment):
        refused(response, 403, "signature_invalid")
    assert wrong.json()["detail"] == other_enrollment.json()["detail"]
    refused(malformed, 400, "value_invalid")
    refused(missing, 400, "evidence_missing")
    refused(no_serial, 400, "evidence_missing")
    assert counts(service) == before


@pytest.mark.both_databases
def test_rotation_keeps_the_old_key_for_the_transition_only(service: Service) -> None:
    with service.admin() as admin:
        old = enrollment_with_key(admin, "simpsons", "the-simpsons")
        rotated = admin.post(
            "/api/v1/enrollments/simpsons/registration-key", json={"transition": "7d"}
        )
        assert rotated.status_code == 201, rotated.text
        new = rotated.json()["key"]
        assert rotated.json()["previous"]["first_half"] == old.split("-")[0]
        listed = admin.get("/api/v1/enrollments/simpsons/registration-key").json()["keys"]
    assert [k["state"] for k in listed] == ["current", "previous"]
    assert all(k["active"] for k in listed)
    with service.client() as client:
        with_old = provision(client, "dev-old", old.split("-")[0])
        with_new = provision(client, "dev-new", new.split("-")[0], header=True)
    assert with_old.status_code == 200, with_old.text
    assert with_new.status_code == 200, with_new.text
    # Each answer is sealed under the second half of the key the device used.
    old_second, new_second = old.split("-")[1].encode(), new.split("-")[1].encode()
    open_for_device(old_second, "dev-old", with_old.json()["bundle"]["sealed"])
    open_for_device(new_second, "dev-new", with_new.json()["bundle"]["sealed"])

    # The transition window ends: the previous key stops, the current one goes on.
    store = SqlRegistrationKeyStore(service.runtime.engine, service.runtime.box)
    store.set_expiry(listed[1]["id"], datetime.now(UTC) - timedelta(seconds=1))
    before = counts(service)
    with service.client() as client:
        after_window = provision(client, "dev-late", old.split("-")[0])
        refused(after_window, 403, "signature_invalid")
        assert counts(service) == before
        assert provision(client, "dev-late", new.split("-")[0]).status_code == 200

    # "0s": the replaced key stops at once; the one before it is gone for good.
    with service.admin() as admin:
        immediate = admin.post(
            "/api/v1/enrollments/simpsons/registration-key", json={"transition": "0s"}
        )
        assert immediate.status_code == 201, immediate.text
        newest = immediate.json()["key"]
        listed = admin.get("/api/v1/enrollments/simpsons/registration-key").json()["keys"]
    assert [(k["state"], k["active"]) for k in listed] == [("current", True), ("previous", False)]
    before = counts(service)
    with service.client() as client:
        for half in (old.split("-")[0], new.split("-")[0]):
            refused(provision(client, "dev-0s", half), 403, "signature_invalid")
        assert counts(service) == before
        assert provision(client, "dev-0s", newest.split("-")[0]).status_code == 200


def test_the_same_serial_in_two_organizations_is_two_devices(service: Service) -> None:
    with service.admin() as admin:
        key_a = enrollment_with_key(admin, "simpsons", "the-simpsons")
        key_b = enrollment_with_key(admin, "flanders", "the-flanders")
    with service.client() as client:
        in_a = provision(client, SERIAL, key_a.split("-")[0])
        in_b = provision(client, SERIAL, key_b.split("-")[0])
        before = counts(service)
        # Naming org B's enrollment with org A's key admits nothing into B.
        crossed = provision(client, SERIAL, key_a.split("-")[0], enrollment_id="flanders")
    assert in_a.status_code == 200, in_a.text
    assert in_b.status_code == 200, in_b.text
    refused(crossed, 403, "signature_invalid")
    assert counts(service) == before
    bundle_a, bundle_b = in_a.json()["bundle"], in_b.json()["bundle"]
    assert (bundle_a["owner"], bundle_b["owner"]) == ("the-simpsons", "the-flanders")
    assert bundle_a["serial"] != bundle_b["serial"]
    device_a = service.runtime.devices.find("the-simpsons", SERIAL)
    device_b = service.runtime.devices.find("the-flanders", SERIAL)
    assert device_a is not None
    assert device_b is not None
    assert device_a.id != device_b.id
    assert device_a.enrollment_id == "simpsons"
    assert device_b.enrollment_id == "flanders"
    # Provisioning again with A's key stays in A and leaves B's device alone.
    with service.client() as client:
        again = provision(client, SERIAL, key_a.split("-")[0])
    assert again.json()["bundle"]["owner"] == "the-simpsons"
    assert service.runtime.devices.find("the-flanders", SERIAL) == device_b


def test_guessing_is_rate_limited_even_for_the_right_key_next(service: Service) -> None:
    with service.admin() as admin:
        key = enrollment_with_key(admin, "simpsons", "the-simpsons")
    first = key.split("-")[0]
    guesses = [f"{i:08d}" for i in range(10)]
    assert first not in guesses
    before = counts(service)
    with service.client() as client:
        for guess in guesses:
            refused(provision(client, SERIAL, guess, header=True), 403, "signature_invalid")
        limited = provision(client, SERIAL, first, header=True)
    refused(limited, 429, "too_many_attempts")
    assert int(limited.headers["retry-after"]) >= 1
    assert counts(service) == before


def test_admin_api_checks_what_it_is_given(service: Service) -> None:
    with service.admin() as admin:
        admin.post(
            "/api/v1/enrollments", json={"id": "sym", "mechanism": "symmetric-key", "owner": "o"}
        )
        admin.post(
            "/api/v1/enrollments",
            json={"id": "simpsons", "mechanism": "registration-key", "owner": "the-simpsons"},
        )
        imported = admin.post(
            "/api/v1/enrollments/simpsons/registration-key", json={"key": "HQ481047-1JWORF43"}
        )
        longer = admin.post(
            "/api/v1/enrollments/simpsons/registration-key", json={"half_length": 16}
        )
        before = admin.get("/api/v1/enrollments/simpsons/registration-key").json()
        wrong_mechanism = admin.post("/api/v1/enrollments/sym/registration-key")
        unknown = admin.post("/api/v1/enrollments/nope/registration-key")
        unknown_get = admin.get("/api/v1/enrollments/nope/registration-key")
        bad_transition = admin.post(
            "/api/v1/enrollments/simpsons/registration-key", json={"transition": "soon"}
        )
        too_long = admin.post(
            "/api/v1/enrollments/simpsons/registration-key", json={"transition": "365d"}
        )
        bad_key = admin.post(
            "/api/v1/enrollments/simpsons/registration-key", json={"key": "HQ481047-1JWORF4"}
        )
        reused = admin.post(
            "/api/v1/enrollments/simpsons/registration-key",
            json={"key": longer.json()["key"]},
        )
        after = admin.get("/api/v1/enrollments/simpsons/registration-key").json()
    with service.client() as client:
        anonymous = client.get("/api/v1/enrollments/simpsons/registration-key")
    assert imported.status_code == 201
    assert imported.json()["key"] == "HQ481047-1JWORF43"
    assert longer.status_code == 201
    assert [len(half) for half in longer.json()["key"].split("-")] == [16, 16]
    refused(wrong_mechanism, 409, "wrong_mechanism")
    refused(unknown, 404, "not_found")
    refused(unknown_get, 404, "not_found")
    refused(bad_transition, 400, "value_invalid")
    refused(too_long, 400, "value_invalid")
    refused(bad_key, 400, "value_invalid")
    refused(reused, 409, "registration_key_taken")
    refused(anonymous, 401, "authentication_required")
    assert "1JWORF43" not in bad_key.text
    assert after == before


@pytest.fixture
def cli_environment(service: Service, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The CLI pointed at the running service's database and data directory."""
    settings = service.runtime.settings
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IMPRINT_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("IMPRINT_DATABASE__URL", settings.database_url())
    monkeypatch.setenv("IMPRINT_CA__PASSPHRASE", "test-passphrase")


@pytest.mark.usefixtures("cli_environment")
def test_cli_creates_rotates_and_shows(service: Service) -> None:
    with service.admin() as admin:
        admin.post(
            "/api/v1/enrollments",
            json={"id": "simpsons", "mechanism": "registration-key", "owner": "the-simpsons"},
        )
    runner = CliRunner()
    rotate_first = runner.invoke(regkey_app, ["rotate", "simpsons"])
    created = runner.invoke(regkey_app, ["create", "simpsons"])
    again = runner.invoke(regkey_app, ["create", "simpsons"])
    rotated = runner.invoke(regkey_app, ["rotate", "simpsons", "--transition", "1h"])
    shown = runner.invoke(regkey_app, ["show", "simpsons"])
    assert rotate_first.exit_code == 1
    assert "no registration key yet" in rotate_first.stderr
    assert created.exit_code == 0, created.stderr
    key = created.stdout.strip()
    assert again.exit_code == 1
    assert "rotate it" in again.stderr
    assert rotated.exit_code == 0, rotated.stderr
    new = rotated.stdout.strip()
    assert f"previous key ({key.split('-')[0]}-...) works until" in rotated.stderr
    assert shown.exit_code == 0
    assert key.split("-")[0] in shown.stdout
    assert new.split("-")[0] in shown.stdout
    assert key.split("-")[1] not in shown.stdout
    assert new.split("-")[1] not in shown.stdout
    # Each change is audited as the operating-system user; the refused ones wrote nothing.
    logged = service.runtime.audit.search(AuditQuery(target_id="simpsons"))
    actor = f"cli:{getpass.getuser()}"
    assert [(e.action, e.actor, e.org_id) for e in logged if e.actor.startswith("cli:")] == [
        ("registration_key.rotate", actor, "the-simpsons"),
        ("registration_key.create", actor, "the-simpsons"),
    ]
    assert key not in str(logged)
    assert new not in str(logged)
    # The key the CLI printed is the one the server admits.
    with service.client() as client:
        response = provision(client, SERIAL, new.split("-")[0], header=True)
    assert response.status_code == 200, response.text
