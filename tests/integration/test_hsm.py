"""CA keys in a PKCS#11 token: SoftHSM2 (Debian's ``softhsm2``), a real token.

The keys are made in (or put into) the token and never leave it; every signature the CA
makes (the CA certificates, device certificates, the server's own certificate, CRLs, OCSP
responses) is the token's and verifies against the CA certificate; the PIN comes from the
environment or a file, never from the configuration file.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pkcs11
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from imprint.attestation.symmetric_key import derive_device_key
from imprint.errors import CAError, CAKeyLocked, ConfigurationError
from imprint.pki.material import import_ca, init_ca, load_ca
from imprint.settings import PKCS11_PIN_ENV, KeyType, Settings, load_settings
from tests.integration.conftest import ensure_org, start_service
from tests.integration.test_symmetric_key import make_csr, request_body

LIBRARY = Path("/usr/lib/softhsm/libsofthsm2.so")
PIN = "4711-test"

pytestmark = pytest.mark.skipif(
    not LIBRARY.is_file() or shutil.which("softhsm2-util") is None,
    reason="softhsm2 is not installed (apt-get install softhsm2)",
)


@dataclass(frozen=True)
class Token:
    label: str
    prefix: str  # of the key labels of one test


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """SoftHSM2's configuration for the session. The module reads its configuration and
    finds its tokens once per process, so the tests of a process share one token, each
    test with keys of its own labels."""
    directory = tmp_path_factory.mktemp("softhsm")
    (directory / "tokens").mkdir()
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {directory / 'tokens'}\nobjectstore.backend = file\n"
        "log.level = ERROR\n"
    )
    before = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    yield conf
    if before is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = before


def new_token(softhsm: Path) -> str:
    """A freshly initialized token with the tests' PIN; its label."""
    label = f"imprint-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label,
         "--so-pin", "so-secret", "--pin", PIN],
        env={**os.environ, "SOFTHSM2_CONF": str(softhsm)},
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return label


def hsm_settings(data_dir: Path, token: Token, **ca: object) -> Settings:
    pkcs11 = {
        "library": str(LIBRARY),
        "token_label": token.label,
        "issuing_key_label": f"{token.prefix}-issuing",
        "root_key_label": f"{token.prefix}-root",
    }
    return Settings(data_dir=data_dir, ca={"pkcs11": pkcs11, **ca})


@pytest.fixture(scope="session")
def session_token(softhsm: Path) -> str:
    return new_token(softhsm)


@pytest.fixture
def token(session_token: Token, monkeypatch: pytest.MonkeyPatch) -> Token:
    monkeypatch.setenv(PKCS11_PIN_ENV, PIN)
    return Token(session_token, uuid.uuid4().hex[:8])


def test_keys_are_made_in_the_token_and_its_signatures_verify(token: Token, tmp_path: Path) -> None:
    settings = hsm_settings(tmp_path / "data", token)
    material = init_ca(settings)
    assert material.issuing_signer.description == f"pkcs11:{token.label}/{token.prefix}-issuing"
    # No key on disk: the token holds them (and the certificates); the files are a copy.
    ca_dir = settings.ca_dir
    assert sorted(p.name for p in ca_dir.iterdir()) == ["chain.crt", "issuing.crt", "root.crt"]
    assert not (settings.data_dir / "ca-passphrase").exists()
    material.issuing.verify_directly_issued_by(material.root)
    material.root.verify_directly_issued_by(material.root)

    # A signature over arbitrary bytes, and over a certificate, verify with the CA's key.
    signature = material.issuing_signer.sign(b"what the token signs")
    issuing_key = material.issuing.public_key()
    assert isinstance(issuing_key, ec.EllipticCurvePublicKey)
    issuing_key.verify(signature, b"what the token signs", ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        issuing_key.verify(signature, b"something else", ec.ECDSA(hashes.SHA256()))

    # The private keys are sensitive and cannot be taken out of the token.
    library = pkcs11.lib(str(LIBRARY))
    with library.get_token(token_label=token.label).open() as session:  # logged in already
        keys = [
            key
            for key in session.get_objects({pkcs11.Attribute.CLASS: pkcs11.ObjectClass.PRIVATE_KEY})
            if key[pkcs11.Attribute.LABEL].startswith(token.prefix)
        ]
        assert sorted(k[pkcs11.Attribute.LABEL] for k in keys) == [
            f"{token.prefix}-issuing",
            f"{token.prefix}-root",
        ]
        for key in keys:
            assert key[pkcs11.Attribute.SENSITIVE] is True
            assert key[pkcs11.Attribute.EXTRACTABLE] is False
            with pytest.raises(pkcs11.PKCS11Error):
                key[pkcs11.Attribute.VALUE]


def test_a_node_needs_only_its_configuration_and_the_pin(token: Token, tmp_path: Path) -> None:
    """Another node (another data directory) loads the CA from the token alone; the
    signatures of its CRLs and OCSP responses are the token's."""
    made = init_ca(hsm_settings(tmp_path / "first", token))
    loaded = load_ca(hsm_settings(tmp_path / "second", token))
    assert loaded.chain == made.chain
    assert loaded.root_signer is not None
    now = datetime.now(UTC).replace(microsecond=0)
    crl = loaded.issuing_signer.sign_crl(
        x509.CertificateRevocationListBuilder()
        .issuer_name(loaded.issuing.subject)
        .last_update(now)
        .next_update(now + timedelta(hours=1))
    )
    issuing_key = loaded.issuing.public_key()
    assert isinstance(issuing_key, ec.EllipticCurvePublicKey)
    assert crl.is_signature_valid(issuing_key)
    root_key = loaded.root.public_key()
    assert isinstance(root_key, ec.EllipticCurvePublicKey)
    assert not crl.is_signature_valid(root_key)

    leaf = _leaf(loaded.issuing, loaded.issuing_signer)
    response = loaded.issuing_signer.sign_ocsp(
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert=leaf,
            issuer=loaded.issuing,
            algorithm=hashes.SHA256(),
            cert_status=ocsp.OCSPCertStatus.GOOD,
            this_update=now,
            next_update=now + timedelta(hours=1),
            revocation_time=None,
            revocation_reason=None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, loaded.issuing)
    )
    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert response.serial_number == leaf.serial_number
    issuing_key.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(hashes.SHA256()))


def _leaf(issuer: x509.Certificate, signer: object) -> x509.Certificate:
    from imprint.pki.signing import CASigner

    assert isinstance(signer, CASigner)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    return signer.sign_certificate(
        x509.CertificateBuilder()
        .subject_name(x509.Name.from_rfc4514_string("CN=leaf"))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
    )


@pytest.mark.parametrize("key_type", [KeyType.EC_P384, KeyType.RSA_3072])
@pytest.mark.slow
def test_other_key_types_sign_in_the_token(token: Token, tmp_path: Path, key_type: KeyType) -> None:
    material = init_ca(hsm_settings(tmp_path / "data", token, key_type=key_type))
    material.issuing.verify_directly_issued_by(material.root)
    _leaf(material.issuing, material.issuing_signer).verify_directly_issued_by(material.issuing)


def test_the_pin_comes_from_the_environment_or_a_file_only(
    token: Token, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    init_ca(hsm_settings(tmp_path / "data", token))
    monkeypatch.setenv(PKCS11_PIN_ENV, "not-the-pin")
    with pytest.raises(CAKeyLocked, match="wrong PIN"):
        load_ca(hsm_settings(tmp_path / "data", token))
    monkeypatch.delenv(PKCS11_PIN_ENV)
    with pytest.raises(CAKeyLocked, match="PIN is not set"):
        load_ca(hsm_settings(tmp_path / "data", token))
    pin_file = tmp_path / "pin"
    pin_file.write_text(PIN + "\n")
    settings = hsm_settings(tmp_path / "data", token)
    from_file = settings.model_copy(
        update={
            "ca": settings.ca.model_copy(
                update={"pkcs11": settings.ca.pkcs11.model_copy(update={"pin_file": pin_file})}
            )
        }
    )
    assert load_ca(from_file).issuing.subject == load_ca(from_file).issuing.subject
    config = tmp_path / "imprint.yaml"
    config.write_text(f"ca:\n  pkcs11:\n    library: {LIBRARY}\n    pin: '{PIN}'\n")
    with pytest.raises(ConfigurationError, match="pin"):
        load_settings(config)


def test_import_puts_a_key_into_the_token_or_uses_the_one_there(
    softhsm: Path, token: Token, tmp_path: Path
) -> None:
    source = init_ca(Settings(data_dir=tmp_path / "files", ca={"passphrase": "pass"}))
    files = tmp_path / "files" / "ca"
    key_pem = (files / "issuing.key").read_bytes()
    issuing_pem, root_pem = (files / "issuing.crt").read_bytes(), (files / "root.crt").read_bytes()

    settings = hsm_settings(tmp_path / "data", token)
    imported = import_ca(
        settings, certificate=issuing_pem, key=key_pem, chain=root_pem, key_password=b"pass"
    )
    assert imported.chain == source.chain
    assert not (settings.ca_dir / "issuing.key").exists()
    leaf = _leaf(imported.issuing, load_ca(settings).issuing_signer)
    leaf.verify_directly_issued_by(source.issuing)

    # Without a key file: the key already in the token under the label is used, once it
    # is shown to belong to the certificate.
    again = import_ca(
        settings, certificate=issuing_pem, key=None, chain=root_pem, key_password=None, force=True
    )
    assert again.issuing == source.issuing
    other = init_ca(Settings(data_dir=tmp_path / "other", ca={"passphrase": "pass"}))
    other_pem = other.issuing.public_bytes(serialization.Encoding.PEM)
    other_root = other.root.public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CAError, match="does not belong"):
        import_ca(
            settings, certificate=other_pem, key=None, chain=other_root,
            key_password=None, force=True,
        )  # fmt: skip


def test_provisioning_with_the_ca_in_the_token(
    token: Token, tmp_path: Path, migrated_database_url: str
) -> None:
    """A whole registration over HTTPS: the device certificate, the CRL and the server's
    own certificate are all signed in the token."""
    settings = hsm_settings(tmp_path / "data", token).model_copy(
        update={"database": Settings(database={"url": migrated_database_url}).database}
    )
    for service in start_service(settings, tmp_path):
        issuing = service.runtime.authority.material.issuing
        server_pem = (settings.data_dir / "tls" / "server.crt").read_bytes()
        x509.load_pem_x509_certificates(server_pem)[0].verify_directly_issued_by(issuing)
        with service.admin() as admin:
            ensure_org(admin, "acme")
            group = admin.post(
                "/api/v1/enrollments",
                json={"mechanism": "symmetric-key", "owner": "acme", "id": "hsm"},
            )
            assert group.status_code == 201, group.text
            key = derive_device_key(base64.b64decode(group.json()["group_key"]), "hsm-1")
            answer = admin.post(
                "/api/v1/provision", json=request_body(key, "hsm-1", csr=make_csr("hsm-1"))
            )
            assert answer.status_code == 200, answer.text
            chain = x509.load_pem_x509_certificates(
                answer.json()["bundle"]["certificate_chain"].encode()
            )
            chain[0].verify_directly_issued_by(issuing)
            serial = answer.json()["bundle"]["serial"]
            revoked = admin.post(
                f"/api/v1/certificates/{serial}/revoke", json={"reason": "keyCompromise"}
            )
            assert revoked.status_code == 200, revoked.text
            crl = x509.load_der_x509_crl(admin.get("/crl/issuing.crl").content)
        issuing_key = issuing.public_key()
        assert isinstance(issuing_key, ec.EllipticCurvePublicKey)
        assert crl.is_signature_valid(issuing_key)
        assert crl.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None
