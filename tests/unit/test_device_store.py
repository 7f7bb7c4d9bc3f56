"""The device directory: modes, atomic saves, recovery after a crash, and validation."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from imprint.device import Bundle, DeviceStore, ServerInfo, StoreError, due, due_at
from imprint.device.keys import generate_key, private_key_pem

NOW = datetime.now(UTC).replace(microsecond=0)
SERVER = ServerInfo("https://imprint.test:8443", None)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(
    cn: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
) -> x509.Certificate:
    issuer_name = issuer[0].subject if issuer else _name(cn)
    signer = issuer[1] if issuer else key
    return (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), False
        )
        .sign(signer, hashes.SHA256())
    )


class Pki:
    def __init__(self) -> None:
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = _ca("Test Root", self.root_key, None)
        self.issuing_key = ec.generate_private_key(ec.SECP256R1())
        self.issuing = _ca("Test Issuing", self.issuing_key, (self.root, self.root_key))

    def bundle(self, key: ec.EllipticCurvePrivateKey, days: int = 9) -> Bundle:
        start, end = NOW - timedelta(minutes=5), NOW + timedelta(days=days)
        leaf = (
            x509.CertificateBuilder()
            .subject_name(_name("dev-1"))
            .issuer_name(self.issuing.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.issuing_key.public_key()),
                False,
            )
            .sign(self.issuing_key, hashes.SHA256())
        )
        return Bundle(
            device_id="dev-1",
            owner="acme",
            enrollment_id="group",
            serial=format(leaf.serial_number, "x"),
            chain=(leaf, self.issuing),
            trust_anchors=(self.root,),
            not_after=end,
            renew_after=start + (end - start) * 2 / 3,
            private_key=key,
            mechanism="oob-secret",
            services={"mqtt": "mqtts://broker:8883"},
            pre_shared_key="psk-0123456789",
        )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def pki() -> Pki:
    return Pki()


def test_save_and_load(pki: Pki, tmp_path: Path) -> None:
    store = DeviceStore(tmp_path / "dev")
    assert not store.exists()
    key = store.pending_key()
    assert mode(store.directory) == 0o700
    assert mode(store.directory / "next-key.pem") == 0o600
    assert store.pending_key().public_key() == key.public_key()  # stable until saved
    bundle = pki.bundle(key)  # type: ignore[arg-type]
    store.save(bundle, server=SERVER)
    assert store.exists()
    assert sorted(p.name for p in store.directory.iterdir()) == [
        "bundle.json", "ca.pem", "cert.pem", "chain.pem", "key.pem",
    ]  # fmt: skip
    assert {p.name: mode(p) for p in store.directory.iterdir()} == {
        "bundle.json": 0o600, "key.pem": 0o600,
        "ca.pem": 0o644, "cert.pem": 0o644, "chain.pem": 0o644,
    }  # fmt: skip
    for name in ("ca.pem", "cert.pem", "chain.pem"):
        assert "psk-0123456789" not in (store.directory / name).read_text()
    loaded = store.load()
    assert loaded.private_key.public_key() == key.public_key()
    assert (loaded.serial, loaded.device_id, loaded.owner) == (bundle.serial, "dev-1", "acme")
    assert loaded.chain == bundle.chain
    assert loaded.trust_anchors == (pki.root,)
    assert dict(loaded.services) == {"mqtt": "mqtts://broker:8883"}
    assert loaded.pre_shared_key == "psk-0123456789"
    assert store.server() == SERVER
    assert "psk" not in repr(loaded)
    assert "PRIVATE" not in repr(loaded)


def test_an_existing_open_directory_is_closed_on_save(pki: Pki, tmp_path: Path) -> None:
    directory = tmp_path / "dev"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    store = DeviceStore(directory)
    store.save(pki.bundle(generate_key()), server=SERVER)
    assert mode(directory) == 0o700


def test_a_crash_after_the_commit_is_finished_on_load(pki: Pki, tmp_path: Path) -> None:
    store = DeviceStore(tmp_path / "dev")
    old_key = generate_key()
    store.save(pki.bundle(old_key), server=SERVER)
    new_key = store.pending_key()
    renewed = pki.bundle(new_key)  # type: ignore[arg-type]
    store.save(renewed, server=SERVER)
    # Put the directory back in the state of a crash between bundle.json and key.pem.
    (store.directory / "next-key.pem").write_bytes(private_key_pem(new_key))
    os.chmod(store.directory / "next-key.pem", 0o600)
    store.key_path.write_bytes(private_key_pem(old_key))
    loaded = store.load()
    assert loaded.serial == renewed.serial
    assert loaded.private_key.public_key() == new_key.public_key()
    assert not (store.directory / "next-key.pem").exists()
    assert store.load().serial == renewed.serial


def test_a_crash_before_the_commit_keeps_the_old_device_and_the_new_key(
    pki: Pki, tmp_path: Path
) -> None:
    store = DeviceStore(tmp_path / "dev")
    old = pki.bundle(generate_key())
    store.save(old, server=SERVER)
    pending = store.pending_key()  # the renewal request went out, then the power did
    loaded = store.load()
    assert loaded.serial == old.serial
    assert store.pending_key().public_key() == pending.public_key()  # asked again, same key


def test_missing_copies_are_rewritten(pki: Pki, tmp_path: Path) -> None:
    store = DeviceStore(tmp_path / "dev")
    bundle = pki.bundle(generate_key())
    store.save(bundle, server=ServerInfo(SERVER.url, "-----BEGIN CERTIFICATE-----\n"))
    store.cert_path.unlink()
    store.chain_path.write_text("garbage")
    store.load()
    assert x509.load_pem_x509_certificate(store.cert_path.read_bytes()) == bundle.certificate
    assert x509.load_pem_x509_certificates(store.chain_path.read_bytes()) == list(bundle.chain)
    assert store.server_ca_path.read_text() == "-----BEGIN CERTIFICATE-----\n"


def test_inconsistent_stores_do_not_load(pki: Pki, tmp_path: Path) -> None:
    store = DeviceStore(tmp_path / "dev")
    with pytest.raises(StoreError, match="no provisioned device"):
        store.load()
    store.save(pki.bundle(generate_key()), server=SERVER)
    good = store.bundle_path.read_text()

    store.key_path.write_bytes(private_key_pem(generate_key()))
    with pytest.raises(StoreError, match="not the key of the stored certificate"):
        store.load()
    store.key_path.unlink()
    with pytest.raises(StoreError, match=r"key\.pem is missing"):
        store.load()

    store = DeviceStore(tmp_path / "dev2")
    store.save(pki.bundle(generate_key()), server=SERVER)
    record = json.loads(store.bundle_path.read_text())
    cases = {
        "serial is not": {**record, "serial": "abc"},
        "format 1": {**record, "format": 2},
        "not PEM certificates": {**record, "certificate_chain": "nope"},
        "does not verify": {**record, "trust_anchors": Pki().root.public_bytes(
            serialization.Encoding.PEM).decode()},
        "no owner": {**record, "owner": ""},
        "not an ISO 8601 time": {**record, "renew_after": "tomorrow"},
    }  # fmt: skip
    for message, changed in cases.items():
        store.bundle_path.write_text(json.dumps(changed))
        with pytest.raises(StoreError, match=message):
            store.load()
    store.bundle_path.write_text("{not json")
    with pytest.raises(StoreError, match="cannot read"):
        store.load()
    assert good  # the first store was valid before it was broken on purpose


def test_an_expired_certificate_still_loads_for_renewal(pki: Pki, tmp_path: Path) -> None:
    store = DeviceStore(tmp_path / "dev")
    bundle = pki.bundle(generate_key(), days=1)
    store.save(bundle, server=SERVER)
    later = NOW + timedelta(days=3)
    assert store.load(at=later).serial == bundle.serial
    assert due(store, later)


def test_due_follows_renew_after_or_two_thirds(pki: Pki) -> None:
    bundle = pki.bundle(generate_key(), days=30)
    assert due_at(bundle) == bundle.renew_after
    assert not due(bundle, bundle.renew_after - timedelta(seconds=1))
    assert due(bundle, bundle.renew_after)
    start = bundle.certificate.not_valid_before_utc
    end = bundle.certificate.not_valid_after_utc
    odd = replace(bundle, renew_after=end + timedelta(days=1))  # nonsense: not trusted
    assert due_at(odd) == start + (end - start) * 2 / 3
    early = replace(bundle, renew_after=start + timedelta(days=1))  # the server's choice
    assert due_at(early) == early.renew_after
