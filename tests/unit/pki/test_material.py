"""CA material on disk: init, load, passphrases, key protection."""

from __future__ import annotations

import shutil
import stat
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from imprint.errors import CAKeyLocked, CANotInitialized, Conflict, UnencryptedCAKey
from imprint.pki.keys import key_description, load_private_key, save_private_key
from imprint.pki.material import CAMaterial, init_ca, load_ca
from imprint.settings import KeyType, Settings

PASSPHRASE = "test-passphrase"


def ca_settings(data_dir: Path, **ca: object) -> Settings:
    return Settings(data_dir=data_dir, ca={"passphrase": PASSPHRASE, **ca})


@dataclass(frozen=True)
class InitializedCA:
    settings: Settings
    material: CAMaterial


@pytest.fixture(scope="module", params=list(KeyType), ids=str)
def initialized(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> InitializedCA:
    """One CA per key type for the whole module (RSA-3072 keys are slow to make)."""
    settings = ca_settings(
        tmp_path_factory.mktemp(f"ca-{request.param}"),
        key_type=request.param,
        organization="Example Corp",
    )
    return InitializedCA(settings, init_ca(settings))


@pytest.fixture
def copied(initialized: InitializedCA, tmp_path: Path) -> InitializedCA:
    """A private copy of the module's CA that a test may change."""
    shutil.copytree(initialized.settings.data_dir, tmp_path / "data")
    settings = initialized.settings.model_copy(update={"data_dir": tmp_path / "data"})
    return InitializedCA(settings, initialized.material)


def public_der(certificate: x509.Certificate) -> bytes:
    return certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


EXPECTED_KEY = {
    KeyType.EC_P256: "EC P-256",
    KeyType.EC_P384: "EC P-384",
    KeyType.RSA_3072: "RSA 3072",
}


def test_init_creates_root_and_issuing_ca_of_the_configured_key_type(
    initialized: InitializedCA,
) -> None:
    material = initialized.material
    key_type = initialized.settings.ca.key_type
    assert key_description(material.root.public_key()) == EXPECTED_KEY[key_type]
    assert key_description(material.issuing.public_key()) == EXPECTED_KEY[key_type]
    assert material.root.subject.rfc4514_string() == "CN=imprint Root CA,O=Example Corp"
    assert material.root.issuer == material.root.subject
    assert material.issuing.subject.rfc4514_string() == "CN=imprint Issuing CA,O=Example Corp"
    assert material.issuing.issuer == material.root.subject
    material.issuing.verify_directly_issued_by(material.root)
    material.root.verify_directly_issued_by(material.root)
    assert material.chain == (material.issuing, material.root)
    assert public_der(material.issuing) != public_der(material.root)


def test_issuing_ca_may_only_sign_end_entities(initialized: InitializedCA) -> None:
    material = initialized.material
    for certificate, path_length in ((material.root, 1), (material.issuing, 0)):
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        assert constraints.critical
        assert constraints.value.ca
        assert constraints.value.path_length == path_length
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage)
        assert usage.critical
        assert usage.value.key_cert_sign
        assert usage.value.crl_sign


def test_issuing_ca_lives_within_the_root_and_as_configured(initialized: InitializedCA) -> None:
    material, ca = initialized.material, initialized.settings.ca
    root_life = material.root.not_valid_after_utc - material.root.not_valid_before_utc
    issuing_life = material.issuing.not_valid_after_utc - material.issuing.not_valid_before_utc
    backdate = timedelta(minutes=5)
    assert root_life == timedelta(days=ca.root_validity_days) + backdate
    assert issuing_life == timedelta(days=ca.issuing_validity_days) + backdate
    assert material.issuing.not_valid_after_utc <= material.root.not_valid_after_utc


def test_ca_keys_on_disk_are_encrypted_and_private(initialized: InitializedCA) -> None:
    directory = initialized.settings.ca_dir
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for name in ("root.key", "issuing.key"):
        path = directory / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        data = path.read_bytes()
        assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        with pytest.raises(TypeError):  # needs a password
            serialization.load_pem_private_key(data, password=None)
        key = serialization.load_pem_private_key(data, password=PASSPHRASE.encode())
        assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)


def test_ca_files_are_written_as_pem(initialized: InitializedCA) -> None:
    directory, material = initialized.settings.ca_dir, initialized.material
    assert x509.load_pem_x509_certificate((directory / "root.crt").read_bytes()) == material.root
    assert (
        x509.load_pem_x509_certificate((directory / "issuing.crt").read_bytes()) == material.issuing
    )
    chain = x509.load_pem_x509_certificates((directory / "chain.crt").read_bytes())
    assert chain == [material.issuing, material.root]


def test_load_with_the_passphrase_gives_back_the_same_ca(initialized: InitializedCA) -> None:
    loaded = load_ca(initialized.settings)
    assert loaded.root == initialized.material.root
    assert loaded.issuing == initialized.material.issuing
    assert loaded.chain == initialized.material.chain
    assert loaded.root_signer is not None
    assert public_der(loaded.issuing) == loaded.issuing_signer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_wrong_passphrase_locks_the_ca(initialized: InitializedCA) -> None:
    wrong = ca_settings(initialized.settings.data_dir, passphrase="not-the-passphrase")
    with pytest.raises(CAKeyLocked, match="wrong passphrase") as caught:
        load_ca(wrong)
    assert caught.value.code == "ca_key_locked"


def test_missing_passphrase_locks_the_ca(initialized: InitializedCA) -> None:
    with pytest.raises(CAKeyLocked, match="no passphrase"):
        load_ca(Settings(data_dir=initialized.settings.data_dir))


@pytest.mark.slow
def test_plaintext_ca_key_is_refused_outside_development(copied: InitializedCA) -> None:
    key_file = copied.settings.ca_dir / "issuing.key"
    save_private_key(
        key_file, load_private_key(key_file, b"test-passphrase", allow_unencrypted=False), None
    )
    assert (
        (copied.settings.ca_dir / "issuing.key")
        .read_bytes()
        .startswith(b"-----BEGIN PRIVATE KEY-----")
    )
    with pytest.raises(UnencryptedCAKey):
        load_ca(copied.settings)
    development = copied.settings.model_copy(update={"development": True})
    assert load_ca(development).issuing == copied.material.issuing


def test_loading_without_a_ca_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(CANotInitialized, match="imprint ca init"):
        load_ca(ca_settings(tmp_path / "data"))


@pytest.mark.slow
def test_init_twice_is_a_conflict_unless_forced(copied: InitializedCA) -> None:
    with pytest.raises(Conflict, match="--force"):
        init_ca(copied.settings)
    assert load_ca(copied.settings).root == copied.material.root  # untouched
    replaced = init_ca(copied.settings, force=True)
    assert replaced.root != copied.material.root
    assert load_ca(copied.settings).root == replaced.root


def test_zero_config_init_writes_a_random_passphrase_file(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    material = init_ca(settings)
    passphrase_file = tmp_path / "data" / "ca-passphrase"
    assert stat.S_IMODE(passphrase_file.stat().st_mode) == 0o600
    assert len(passphrase_file.read_text().strip()) >= 40
    assert (settings.ca_dir / "issuing.key").read_bytes().startswith(b"-----BEGIN ENCRYPTED")
    assert load_ca(settings).issuing == material.issuing  # found again without configuration


def test_configured_passphrase_file_must_exist(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        ca={"passphrase_file": tmp_path / "missing"},
    )
    with pytest.raises(CAKeyLocked, match="does not exist"):
        init_ca(settings)


def test_empty_passphrase_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    settings = Settings(
        data_dir=tmp_path / "data",
        ca={"passphrase_file": tmp_path / "empty"},
    )
    with pytest.raises(CAKeyLocked, match="empty"):
        init_ca(settings)


def test_issuing_validity_never_exceeds_the_root(tmp_path: Path) -> None:
    settings = ca_settings(tmp_path / "data", root_validity_days=10, issuing_validity_days=100)
    material = init_ca(settings)
    assert material.issuing.not_valid_after_utc == material.root.not_valid_after_utc
