"""The device SDK against a real imprint over real TLS: every mechanism, storage, renewal,
waiting while pending, Retry-After, and answers that must not be trusted."""

from __future__ import annotations

import base64
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from imprint.device import (
    Bundle,
    DeviceStore,
    ImprintClient,
    RequestRefused,
    RetryPolicy,
    ServerInfo,
    ServiceUnavailable,
    StoreError,
    VerificationFailed,
    WaitPolicy,
    connect,
    due,
    due_at,
    load_certificates,
    load_private_key,
    maintain,
    provision_client_ca,
    provision_oob_secret,
    provision_registration_key,
    provision_symmetric_key,
    provision_x509,
    renew,
    verify_bundle,
)
from imprint.device.client import PROVISION_PATH
from imprint.device.evidence import derive_device_key, split_registration_key
from imprint.device.keys import generate_key, make_csr, private_key_pem
from imprint.device.provision import exchange
from tests.integration.conftest import Service, with_orgs
from tests.integration.test_lifecycle import Factory, device_ref
from tests.integration.test_x509_attestation import Manufacturer, enroll


@pytest.fixture
def service(service: Service) -> Service:
    """The server, with the organizations this module's enrollments name."""
    return with_orgs(service, "acme")


class ScriptedClock:
    """Time that passes only when the SDK sleeps; each sleep can run a step of the test
    (register a secret, approve a device) as if it happened while the device waited."""

    def __init__(self, on_sleep: Callable[[int], None] | None = None, *, real: bool = False):
        self.sleeps: list[float] = []
        self.offset = 0.0
        self.on_sleep = on_sleep
        self.real = real

    def monotonic(self) -> float:
        # Scripted time stands still between sleeps, however long a request takes.
        return (time.monotonic() if self.real else 0.0) + self.offset

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.real:
            time.sleep(seconds)
        else:
            self.offset += seconds
        if self.on_sleep is not None:
            self.on_sleep(len(self.sleeps))

    def wall(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.offset)


def sdk(service: Service, **options: Any) -> ImprintClient:
    return ImprintClient(service.base_url, ca_file=service.root_cert, **options)


def admin_post(service: Service, path: str, **body: Any) -> dict[str, Any]:
    with service.admin() as admin:
        response = admin.post(path, json=body)
    assert response.status_code in (200, 201), response.text
    result: dict[str, Any] = response.json()
    return result


def enrollment(service: Service, mechanism: str, id: str, **fields: Any) -> dict[str, Any]:
    return admin_post(
        service, "/api/v1/enrollments", id=id, mechanism=mechanism, owner="acme", **fields
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def openssl_verify(store: DeviceStore) -> str:
    result = subprocess.run(
        ["openssl", "verify", "-CAfile", str(store.ca_path), "-untrusted", str(store.chain_path),
         str(store.cert_path)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def check_stored(store: DeviceStore, bundle: Bundle, client: ImprintClient) -> Bundle:
    """Save, then check what a user would: modes, files, openssl, and a clean reload."""
    store.save(bundle, server=ServerInfo(client.base_url, client.trust_pem))
    assert mode(store.directory) == 0o700
    assert mode(store.key_path) == 0o600
    assert mode(store.bundle_path) == 0o600
    assert not (store.directory / "next-key.pem").exists()
    assert "OK" in openssl_verify(store)
    assert load_certificates(store.cert_path) == [bundle.certificate]
    stored_key = load_private_key(store.key_path)
    assert stored_key.public_key() == bundle.certificate.public_key()
    loaded = store.load()
    assert (loaded.device_id, loaded.serial, loaded.owner) == (
        bundle.device_id,
        bundle.serial,
        bundle.owner,
    )
    assert loaded.pre_shared_key == bundle.pre_shared_key
    assert store.server().url == client.base_url
    return loaded


@pytest.fixture
def acme() -> Manufacturer:
    return Manufacturer.create("Acme")


@pytest.fixture
def client_and_clock(service: Service) -> Iterator[tuple[ImprintClient, ScriptedClock]]:
    clock = ScriptedClock()
    with sdk(service, clock=clock) as client:
        yield client, clock


# -- every mechanism ------------------------------------------------------------------------


@pytest.mark.parametrize("way", ["mtls", "signed"])
@pytest.mark.slow
def test_x509_with_the_manufacturer_certificate(
    service: Service, tmp_path: Path, acme: Manufacturer, way: str
) -> None:
    enroll(service, acme.chain(), services={"mqtt": "mqtts://broker:8883"})
    idevid, idevid_key = acme.line.idevid(f"sensor-{way}")
    store = DeviceStore(tmp_path / "device")
    with sdk(service) as client:
        bundle = provision_x509(
            client,
            [idevid, acme.line.certificate],
            idevid_key,
            mode="mtls" if way == "mtls" else "signed",
            key=store.pending_key(),
        )
        loaded = check_stored(store, bundle, client)
    assert bundle.device_id == f"sensor-{way}"
    assert bundle.mechanism == "x509"
    assert bundle.services["mqtt"] == "mqtts://broker:8883"
    assert loaded.certificate.subject.rfc4514_string() == f"CN=sensor-{way},OU=acme"


def test_client_ca_over_mutual_tls(service: Service, tmp_path: Path) -> None:
    factory = Factory(service, tmp_path, "sdk-cca", pre_shared_key="0123456789abcdef0123")
    cert_file, key_file = factory.device("meter-7")
    store = DeviceStore(tmp_path / "device")
    with sdk(service) as client:
        bundle = provision_client_ca(
            client,
            load_certificates(cert_file),
            load_private_key(key_file),
            key=store.pending_key(),
        )
        check_stored(store, bundle, client)
    assert bundle.device_id == "meter-7"
    assert bundle.pre_shared_key == "0123456789abcdef0123"


def test_oob_secret_waits_until_the_secret_is_registered(service: Service, tmp_path: Path) -> None:
    enrollment(service, "oob-secret", "sdk-oob", generate_pre_shared_key=True)
    secret = "label-secret-0042"

    def register_while_waiting(sleeps: int) -> None:
        if sleeps == 1:
            admin_post(
                service,
                "/api/v1/enrollments/sdk-oob/oob-secrets",
                device_id="oob-0042",
                secret=secret,
            )

    clock = ScriptedClock(register_while_waiting)
    store = DeviceStore(tmp_path / "device")
    with sdk(service, clock=clock, wait=WaitPolicy(max_total=120, max_interval=20)) as client:
        bundle = provision_oob_secret(client, "oob-0042", secret, key=store.pending_key())
        check_stored(store, bundle, client)
    assert clock.sleeps == [20]  # Retry-After was 30 s, capped by the wait policy
    psk = service.runtime.enrollments.get("sdk-oob").pre_shared_key
    assert psk is not None
    assert bundle.pre_shared_key == psk  # it came sealed with the secret, and opened


def test_symmetric_key_from_a_group_key(service: Service, tmp_path: Path) -> None:
    group = enrollment(service, "symmetric-key", "sdk-sym", services={"api": "https://api"})
    device_key = derive_device_key(base64.b64decode(group["group_key"]), "th-0001")
    store = DeviceStore(tmp_path / "device")
    with sdk(service) as client:
        bundle = provision_symmetric_key(
            client, "th-0001", device_key=device_key, key=store.pending_key()
        )
        check_stored(store, bundle, client)
    assert (bundle.device_id, bundle.enrollment_id) == ("th-0001", "sdk-sym")
    assert dict(bundle.services) == {"api": "https://api"}


def test_registration_key_opens_its_sealed_psk(service: Service, tmp_path: Path) -> None:
    enrollment(service, "registration-key", "sdk-reg", generate_pre_shared_key=True)
    key = admin_post(service, "/api/v1/enrollments/sdk-reg/registration-key")["key"]
    store = DeviceStore(tmp_path / "device")
    with sdk(service) as client:
        bundle = provision_registration_key(
            client, "74743827342", f"  {key.lower()} ", key=store.pending_key()
        )
        check_stored(store, bundle, client)
    assert bundle.device_id == "74743827342"
    assert bundle.pre_shared_key == service.runtime.enrollments.get("sdk-reg").pre_shared_key


# -- answers that must not be trusted ---------------------------------------------------------


def test_a_wrong_second_key_half_fails_verification_and_stores_nothing(
    service: Service, tmp_path: Path
) -> None:
    enrollment(service, "registration-key", "sdk-half", generate_pre_shared_key=True)
    key = admin_post(service, "/api/v1/enrollments/sdk-half/registration-key")["key"]
    first, second = split_registration_key(key)
    wrong = f"{first}-{'A' * len(second) if second != 'A' * len(second) else 'B' * len(second)}"
    store = DeviceStore(tmp_path / "device")
    with sdk(service) as client, pytest.raises(VerificationFailed, match="response MAC"):
        provision_registration_key(client, "serial-1", wrong, key=store.pending_key())
    assert not store.exists()
    with pytest.raises(StoreError, match="no provisioned device"):
        store.load()


def test_a_tampered_answer_is_refused(service: Service) -> None:
    """The server's real answer, changed on the way: each change is caught."""
    enrollment(service, "oob-secret", "sdk-tamper")
    admin_post(
        service,
        "/api/v1/enrollments/sdk-tamper/oob-secrets",
        device_id="t-1",
        secret="tamper-secret-1",
    )
    key = generate_key()
    csr = make_csr(key, "t-1")
    csr_pem = csr.public_bytes(serialization.Encoding.PEM).decode()
    from imprint.device.evidence import oob_secret_evidence

    def build() -> tuple[dict[str, Any], dict[str, str]]:
        evidence = oob_secret_evidence("tamper-secret-1", "t-1", csr)
        body = {"mechanism": "oob-secret", "csr": csr_pem, "registration_id": "t-1"}
        return {**body, "evidence": evidence}, {}

    with sdk(service) as client:
        data, _request = exchange(client, PROVISION_PATH, build)
    secret = b"tamper-secret-1"
    good = verify_bundle(data, key, mechanism="oob-secret", secret=secret, device_id="t-1")
    assert good.device_id == "t-1"
    mac = data["response_mac"]
    forged_mac = mac[:-2] + ("AA" if mac[-2:] != "AA" else "BB")
    other_key = generate_key()
    foreign_root = (
        Manufacturer.create("Forger").root.public_bytes(serialization.Encoding.PEM).decode()
    )
    cases: dict[str, tuple[Mapping[str, Any], Any, str | None]] = {
        "changed MAC": ({**data, "response_mac": forged_mac}, key, "t-1"),
        "MAC removed": ({**data, "response_mac": None}, key, "t-1"),
        "another device id": ({**data, "device_id": "t-2"}, key, "t-1"),
        "another key's request": (data, other_key, "t-1"),
        "foreign trust anchor": ({**data, "trust_anchors": [foreign_root]}, key, None),
    }
    for name, (changed, device_key, device_id) in cases.items():
        with pytest.raises(VerificationFailed):
            verify_bundle(
                changed,
                device_key,
                mechanism="oob-secret",
                secret=secret if name != "foreign trust anchor" else None,
                device_id=device_id,
            )


def test_the_server_certificate_must_chain_to_the_given_ca(
    service: Service, tmp_path: Path
) -> None:
    other = Manufacturer.create("Not imprint")
    ca_file = tmp_path / "other.pem"
    ca_file.write_bytes(other.root.public_bytes(serialization.Encoding.PEM))
    with (
        ImprintClient(service.base_url, ca_file=ca_file) as client,
        pytest.raises(VerificationFailed, match="server's TLS certificate does not verify"),
    ):
        client.directory()  # refused at once: retrying cannot make it trusted


# -- waiting and backing off ------------------------------------------------------------------


def test_pending_approval_is_waited_for_with_the_servers_retry_after(
    service: Service, tmp_path: Path
) -> None:
    group = enrollment(service, "symmetric-key", "sdk-held", manual_approval=True)
    device_key = derive_device_key(base64.b64decode(group["group_key"]), "held-1")

    def approve(sleeps: int) -> None:
        if sleeps == 2:
            with service.admin() as admin:
                approved = admin.post(f"/api/v1/devices/{device_ref(service, 'held-1')}/approve")
            assert approved.status_code == 200, approved.text

    clock = ScriptedClock(approve)
    store = DeviceStore(tmp_path / "device")
    with sdk(service, clock=clock) as client:
        bundle = provision_symmetric_key(
            client, "held-1", device_key=device_key, key=store.pending_key()
        )
        check_stored(store, bundle, client)
    assert clock.sleeps == [30, 30]  # the server's Retry-After, twice


def test_pending_too_long_gives_up_and_a_retry_resumes(service: Service, tmp_path: Path) -> None:
    from imprint.device import PendingTimeout

    enrollment(service, "oob-secret", "sdk-late")
    store = DeviceStore(tmp_path / "device")
    clock = ScriptedClock()
    with sdk(service, clock=clock, wait=WaitPolicy(max_total=50, max_interval=30)) as client:
        with pytest.raises(PendingTimeout, match="still pending") as raised:
            provision_oob_secret(client, "late-1", "late-secret-1", key=store.pending_key())
        assert raised.value.device_id == "late-1"
        assert clock.sleeps == [30, 20]
        admin_post(
            service,
            "/api/v1/enrollments/sdk-late/oob-secrets",
            device_id="late-1",
            secret="late-secret-1",
        )
        bundle = provision_oob_secret(client, "late-1", "late-secret-1", key=store.pending_key())
        check_stored(store, bundle, client)


def test_429_retry_after_is_honoured(service: Service, tmp_path: Path) -> None:
    # An OOB secret can be guessed, so ten wrong ones from this address hold back even
    # the right one from here until the oldest failure is a minute old.
    enrollment(service, "oob-secret", "sdk-429")
    admin_post(
        service, "/api/v1/enrollments/sdk-429/oob-secrets", device_id="rl-1", secret="rl-secret-1"
    )
    with sdk(service, retry=RetryPolicy(max_attempts=1)) as client:
        for attempt in range(10):
            with pytest.raises(RequestRefused) as refused:
                provision_oob_secret(client, "rl-1", f"wrong-secret-{attempt}")
            assert refused.value.code == "signature_invalid"
        with pytest.raises(ServiceUnavailable) as limited:
            provision_oob_secret(client, "rl-1", "rl-secret-1")
    assert (limited.value.status, limited.value.code) == (429, "too_many_attempts")
    asked = limited.value.retry_after
    assert asked is not None
    assert 1 <= asked <= 61
    # While the device sleeps what Retry-After said, the server's clock moves on as much.
    clock = ScriptedClock(
        lambda _: service.clock.advance(timedelta(seconds=clock.sleeps[-1])), real=False
    )
    store = DeviceStore(tmp_path / "device")
    with sdk(service, clock=clock, retry=RetryPolicy(max_attempts=3)) as client:
        bundle = provision_oob_secret(client, "rl-1", "rl-secret-1", key=store.pending_key())
        check_stored(store, bundle, client)
    assert len(clock.sleeps) == 1
    assert 1 <= clock.sleeps[0] <= 61  # what Retry-After said, not the 0.5 s backoff


# -- renewal --------------------------------------------------------------------------------


def provisioned(service: Service, tmp_path: Path, name: str, **fields: Any) -> DeviceStore:
    group = enrollment(service, "symmetric-key", f"sdk-{name}", **fields)
    device_key = derive_device_key(base64.b64decode(group["group_key"]), name)
    store = DeviceStore(tmp_path / name)
    with sdk(service) as client:
        bundle = provision_symmetric_key(
            client, name, device_key=device_key, key=store.pending_key()
        )
        store.save(bundle, server=ServerInfo(client.base_url, client.trust_pem))
    return store


@pytest.mark.parametrize(("mode_", "new_key"), [("mtls", True), ("signed", True), ("auto", False)])
def test_renew(service: Service, tmp_path: Path, mode_: Any, new_key: bool) -> None:
    store = provisioned(service, tmp_path, "rn-1", validity_days=3)
    before = store.load()
    assert not due(store)
    assert due(store, due_at(before) + timedelta(seconds=1))
    lifetime = before.certificate.not_valid_after_utc - before.certificate.not_valid_before_utc
    assert due_at(before) - before.certificate.not_valid_before_utc == pytest.approx(
        lifetime * 2 / 3, abs=timedelta(seconds=1)
    )
    with connect(store) as client:
        renewed = renew(client, store, new_key=new_key, mode=mode_)
    after = store.load()
    assert after.serial == renewed.serial != before.serial
    assert after.device_id == "rn-1"
    assert after.mechanism == "symmetric-key"
    same_key = after.private_key.public_key() == before.private_key.public_key()
    assert same_key is not new_key
    assert "OK" in openssl_verify(store)
    assert mode(store.key_path) == 0o600
    old = service.runtime.ledger.get(before.serial)
    assert old.revocation_reason == "superseded"


def test_a_renewal_lost_in_a_crash_is_collected_on_the_next_attempt(
    service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = provisioned(service, tmp_path, "cr-1")
    before = store.load()
    lost: list[str] = []
    save = DeviceStore.save

    def power_cut(self: DeviceStore, bundle: Bundle, **_: Any) -> None:
        lost.append(bundle.serial)
        raise OSError("power cut")

    monkeypatch.setattr(DeviceStore, "save", power_cut)
    with connect(store) as client, pytest.raises(OSError, match="power cut"):
        renew(client, store)
    monkeypatch.setattr(DeviceStore, "save", save)
    assert store.load().serial == before.serial  # the answer never reached the disk
    assert service.runtime.ledger.get(before.serial).revocation_reason == "superseded"
    with connect(store) as client:
        renewed = renew(client, store)
    assert renewed.serial == lost[0]  # the certificate already issued, not a third one
    assert store.load().serial == lost[0]
    assert "OK" in openssl_verify(store)


def test_renewal_of_a_revoked_device_is_refused_and_keeps_the_files(
    service: Service, tmp_path: Path
) -> None:
    store = provisioned(service, tmp_path, "rv-1")
    before = store.load()
    with service.admin() as admin:
        revoked = admin.post(f"/api/v1/devices/{device_ref(service, 'rv-1')}/revoke", json={})
    assert revoked.status_code == 200, revoked.text
    with connect(store) as client, pytest.raises(RequestRefused) as refused:
        renew(client, store, mode="signed")
    assert refused.value.code in ("certificate_revoked", "device_disabled")
    assert store.load().serial == before.serial


def test_maintain_sleeps_until_due_then_renews(service: Service, tmp_path: Path) -> None:
    store = provisioned(service, tmp_path, "mt-1", validity_days=1)
    before = store.load()
    clock = ScriptedClock()
    with connect(store, clock=clock) as client:
        after = maintain(client, store, renewals=1, wall=clock.wall)
    waited = sum(clock.sleeps)
    expected = (due_at(before) - datetime.now(UTC)).total_seconds()
    assert expected - 5 <= waited <= expected + 5
    assert all(s <= 3600 for s in clock.sleeps)
    assert after.serial != before.serial
    assert store.load().serial == after.serial


def test_a_store_with_a_key_open_to_others_does_not_load(service: Service, tmp_path: Path) -> None:
    store = provisioned(service, tmp_path, "ms-1")
    store.key_path.chmod(0o644)
    with pytest.raises(StoreError, match="chmod 600"):
        store.load()
    store.key_path.chmod(0o600)
    (store.directory / "bundle.json").write_text("{}")
    with pytest.raises(StoreError, match="not a device bundle"):
        store.load()


# -- the README's examples ----------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
README_URL, README_CA, README_KEY = (
    "https://127.0.0.1:8443",
    "data/ca/root.crt",
    "HQ481047-1JWORF43",
)


def python_blocks(document: Path, section: str) -> list[str]:
    """The ```python blocks of one ``## section`` of a Markdown file."""
    text = document.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end > 0 else None]
    return [block.split("```", 1)[0] for block in body.split("```python\n")[1:]]


def write_pem(path: Path, *items: Any) -> None:
    data = b""
    for item in items:
        if isinstance(item, x509.Certificate):
            data += item.public_bytes(serialization.Encoding.PEM)
        else:
            data += private_key_pem(item)
    path.write_bytes(data)


@pytest.mark.slow
@pytest.mark.both_databases
def test_the_readme_examples_run(service: Service, tmp_path: Path, acme: Manufacturer) -> None:
    blocks = python_blocks(REPO / "README.md", "Devices")
    assert len(blocks) == 6
    assert all(len(block.strip().splitlines()) <= 10 for block in blocks)
    enroll(service, acme.chain())
    idevid, idevid_key = acme.line.idevid("readme-x509")
    factory = Factory(service, tmp_path, "readme-cca")
    cca_cert, cca_key = factory.device("readme-cca-1")
    enrollment(service, "oob-secret", "readme-oob")
    admin_post(
        service,
        "/api/v1/enrollments/readme-oob/oob-secrets",
        device_id="sensor-17",
        secret="label-secret-0042",
    )
    group = enrollment(service, "symmetric-key", "readme-sym")
    enrollment(service, "registration-key", "readme-reg", generate_pre_shared_key=True)
    key = admin_post(service, "/api/v1/enrollments/readme-reg/registration-key")["key"]
    setups: dict[str, Callable[[Path], None]] = {
        "provision_x509": lambda d: (
            write_pem(d / "idevid.pem", idevid, acme.line.certificate),
            write_pem(d / "idevid.key", idevid_key),
        ),
        "provision_client_ca": lambda d: (
            (d / "device.pem").write_bytes(cca_cert.read_bytes()),
            (d / "device.key").write_bytes(cca_key.read_bytes()),
        ),
        "provision_oob_secret": lambda d: None,
        "provision_symmetric_key": lambda d: (d / "device-key.bin").write_bytes(
            derive_device_key(base64.b64decode(group["group_key"]), "th-0001")
        ),
        "provision_registration_key": lambda d: None,
    }
    ran = []
    serials: dict[str, str] = {}
    for block in blocks:
        code = (
            block.replace(README_URL, service.base_url)
            .replace(README_CA, str(service.root_cert))
            .replace(README_KEY, key)
        )
        name = next((n for n in setups if n in code), "renew")
        workdir = tmp_path / ("provision_symmetric_key" if name == "renew" else name)
        workdir.mkdir(exist_ok=True)
        if name != "renew":
            setups[name](workdir)
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=workdir, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, f"{name}:\n{code}\n{result.stderr}"
        stored = DeviceStore(workdir / "device").load()
        if name == "renew":
            assert stored.serial != serials["provision_symmetric_key"]
        else:
            assert stored.mechanism == name.removeprefix("provision_").replace("_", "-")
        serials[name] = stored.serial
        ran.append((name, stored.device_id))
    assert ran == [
        ("provision_x509", "readme-x509"),
        ("provision_client_ca", "readme-cca-1"),
        ("provision_oob_secret", "sensor-17"),
        ("provision_symmetric_key", "th-0001"),
        ("provision_registration_key", "74743827342"),
        ("renew", "th-0001"),
    ]
