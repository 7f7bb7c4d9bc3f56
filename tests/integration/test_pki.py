"""The certificate authority end to end: issue, check with openssl and pkilint, revoke, CRLs.

Every CA key type is exercised; RSA-3072 CAs are slow to make, so each key type's CA is
made once per module. Certificates are checked by the real ``openssl`` binary and by
pkilint's RFC 5280 linters, not only by our own reading of them.
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID
from pkilint import loader, pkix
from pkilint.bin import lint_pkix_signer_signee_cert_chain as chain_lint
from pkilint.pkix import certificate as pkilint_certificate
from pkilint.pkix import crl as pkilint_crl
from pkilint.pkix import extension as pkilint_extension
from pkilint.pkix import name as pkilint_name
from pkilint.validation import ValidationFindingSeverity, ValidationResult
from sqlalchemy.engine import Engine

from imprint.clock import SystemClock
from imprint.errors import (
    Conflict,
    InvalidValue,
    NotFound,
    UnknownProfile,
    UnsupportedKey,
)
from imprint.pki.authority import CertificateAuthority, IssuanceRequest, parse_reason
from imprint.pki.chain import ChainInvalid, verify_client_certificate
from imprint.pki.csr import common_name, load_csr
from imprint.pki.material import CAMaterial, import_ca, init_ca, load_ca
from imprint.pki.ocsp import OcspResponder
from imprint.pki.profiles import Publication
from imprint.pki.records import CertificateStatus
from imprint.pki.signing import KeySigner
from imprint.settings import KeyType, ProfileSettings, Settings
from imprint.store import db
from imprint.store.certificates import SqlCertificateLedger

# Storage: every test here runs on PostgreSQL too (see tests/conftest.py).
pytestmark = pytest.mark.both_databases

BASE_URL = "https://ca.example.com:8443"
PROFILES = ("device", "client", "server")
SERVER_SANS = ("device-api.example.com", "192.0.2.10")


# --- helpers ------------------------------------------------------------------------------


def openssl(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the openssl binary; the result is returned whatever the exit code."""
    return subprocess.run(
        ["openssl", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def pem(*items: x509.Certificate | x509.CertificateRevocationList) -> bytes:
    return b"".join(item.public_bytes(serialization.Encoding.PEM) for item in items)


def der(item: x509.Certificate | x509.CertificateRevocationList) -> bytes:
    return item.public_bytes(serialization.Encoding.DER)


def serious(results: Iterable[ValidationResult]) -> list[str]:
    """pkilint findings of severity ERROR or FATAL, readable in an assertion message."""
    return [
        f"{result.node.path}: {found.finding.code} ({found.finding.severity.name}) "
        f"{found.message or ''}"
        for result in results
        for found in result.finding_descriptions
        if found.finding.severity <= ValidationFindingSeverity.ERROR
    ]


def lint_certificate(certificate: x509.Certificate) -> list[str]:
    """RFC 5280 certificate lint, as pkilint's ``lint_pkix_cert`` runs it."""
    validator = pkilint_certificate.create_pkix_certificate_validator_container(
        pkilint_certificate.create_decoding_validators(
            pkilint_name.ATTRIBUTE_TYPE_MAPPINGS, pkilint_extension.EXTENSION_MAPPINGS
        ),
        [
            pkilint_certificate.create_issuer_validator_container([]),
            pkilint_certificate.create_validity_validator_container(),
            pkilint_certificate.create_subject_validator_container([]),
            pkilint_certificate.create_extensions_validator_container([]),
            pkilint_certificate.create_spki_validator_container([]),
        ],
    )
    document = loader.load_der_certificate(der(certificate), "certificate")
    return serious(validator.validate(document.root))


def lint_issuer_and_subject(issuer: x509.Certificate, subject: x509.Certificate) -> list[str]:
    """pkilint's signer/signee check: names and key ids chain, the signature verifies."""
    documents: dict[str, object] = {}
    issuer_doc = loader.load_der_certificate(der(issuer), "issuer", "issuer", documents)
    documents["issuer"] = issuer_doc
    subject_doc = loader.load_der_certificate(der(subject), "subject", "subject", documents)
    documents["subject"] = subject_doc
    decoders = chain_lint.create_decoder_validation_container()
    results = decoders.validate(issuer_doc.root) + decoders.validate(subject_doc.root)
    results += chain_lint.create_issuer_validation_container().validate(issuer_doc.root)
    results += chain_lint.create_subject_validation_container().validate(subject_doc.root)
    return serious(results)


def lint_crl(crl: x509.CertificateRevocationList) -> list[str]:
    """RFC 5280 CRL lint, as pkilint's ``lint_crl -p PKIX -t CRL`` runs it."""
    validator = pkilint_crl.create_pkix_crl_validator_container(
        [
            pkix.create_attribute_decoder(pkilint_name.ATTRIBUTE_TYPE_MAPPINGS),
            pkix.create_extension_decoder(pkilint_extension.EXTENSION_MAPPINGS),
        ],
        [
            pkilint_crl.create_issuer_validator_container([]),
            pkilint_crl.create_validity_validator_container([]),
            pkilint_crl.create_extensions_validator_container([]),
        ],
    )
    document = loader.load_der_crl(der(crl), "crl")
    return serious(validator.validate(document.root))


def openssl_verify(
    directory: Path,
    material: CAMaterial,
    leaf: x509.Certificate,
    *,
    purpose: str,
    crl: x509.CertificateRevocationList | None = None,
) -> subprocess.CompletedProcess[str]:
    """``openssl verify`` of ``leaf`` against our root with the CA chain as untrusted."""
    (directory / "root.crt").write_bytes(pem(material.root))
    (directory / "untrusted.crt").write_bytes(pem(*material.chain[:-1]))
    (directory / "leaf.pem").write_bytes(pem(leaf))
    args: list[str | Path] = ["verify", "-x509_strict", "-purpose", purpose]
    if crl is not None:
        (directory / "crl.pem").write_bytes(pem(crl))
        args += ["-crl_check", "-CRLfile", "crl.pem"]
    args += ["-CAfile", "root.crt", "-untrusted", "untrusted.crt", "leaf.pem"]
    return openssl(*args, cwd=directory)


def make_authority(material: CAMaterial, engine: Engine, **profiles: int) -> CertificateAuthority:
    return CertificateAuthority(
        material,
        SqlCertificateLedger(engine),
        profiles=ProfileSettings(**profiles),
        base_url=BASE_URL,
        crl_validity=timedelta(hours=24),
    )


def device_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def request_for(profile: str, key: object | None = None, **changes: object) -> IssuanceRequest:
    public_key = (key or device_key()).public_key()  # type: ignore[attr-defined]
    request = IssuanceRequest(
        public_key=public_key,
        profile=profile,
        common_name=f"{profile}-0042",
        sans=SERVER_SANS if profile == "server" else (),
    )
    return replace(request, **changes)  # type: ignore[arg-type]


def ca_settings(data_dir: Path, **ca: object) -> Settings:
    return Settings(data_dir=data_dir, ca={"passphrase": "test-passphrase", **ca})


# --- fixtures -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Installation:
    """A CA, the authority acting for it, and the ledger behind the authority."""

    key_type: KeyType
    material: CAMaterial
    authority: CertificateAuthority
    ledger: SqlCertificateLedger

    def recorded(self) -> int:
        return len(self.ledger.search(limit=1_000_000))


def install(
    material: CAMaterial, engine: Engine, key_type: KeyType = KeyType.EC_P256
) -> Installation:
    authority = make_authority(material, engine)
    return Installation(key_type, material, authority, SqlCertificateLedger(engine))


@contextmanager
def sqlite_engine(path: Path) -> Iterator[Engine]:
    engine = db.create_engine(f"sqlite:///{path}")
    db.upgrade(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture(scope="module", params=list(KeyType), ids=str)
def installation(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Installation]:
    """A CA of each key type with a SQLite ledger, shared by the module's tests."""
    directory = tmp_path_factory.mktemp(f"pki-{request.param}")
    material = init_ca(ca_settings(directory / "data", key_type=request.param))
    with sqlite_engine(directory / "imprint.db") as engine:
        yield install(material, engine, request.param)


@pytest.fixture(scope="module")
def p256(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    """An EC P-256 CA with a SQLite ledger, shared by the module's tests."""
    directory = tmp_path_factory.mktemp("p256")
    with sqlite_engine(directory / "imprint.db") as engine:
        yield install(init_ca(ca_settings(directory / "data")), engine)


@pytest.fixture
def ca(p256: Installation, engine: Engine) -> Installation:
    """The EC P-256 CA with a ledger of its own in the test's database (both backends)."""
    return install(p256.material, engine)


# --- what an issued certificate looks like ------------------------------------------------


def expected_extensions(profile: str) -> list[tuple[x509.ObjectIdentifier, bool]]:
    expected = [
        (ExtensionOID.BASIC_CONSTRAINTS, True),
        (ExtensionOID.KEY_USAGE, True),
        (ExtensionOID.EXTENDED_KEY_USAGE, False),
        (ExtensionOID.SUBJECT_KEY_IDENTIFIER, False),
        (ExtensionOID.AUTHORITY_KEY_IDENTIFIER, False),
        (ExtensionOID.CRL_DISTRIBUTION_POINTS, False),
        (ExtensionOID.AUTHORITY_INFORMATION_ACCESS, False),
    ]
    if profile == "server":
        expected.append((ExtensionOID.SUBJECT_ALTERNATIVE_NAME, False))
    return expected


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.slow
def test_issued_certificate_carries_exactly_the_profile_extensions(
    installation: Installation, profile: str
) -> None:
    key = device_key()
    issued = installation.authority.issue(request_for(profile, key))
    cert = issued.certificate
    extensions = cert.extensions
    assert [(e.oid, e.critical) for e in extensions] == expected_extensions(profile)
    assert cert.version is x509.Version.v3
    assert cert.subject.rfc4514_string() == f"CN={profile}-0042"
    assert cert.issuer == installation.material.issuing.subject
    assert cert.public_key() == key.public_key()

    constraints = extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints == x509.BasicConstraints(ca=False, path_length=None)
    usage = extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert not usage.key_encipherment  # an EC key cannot encipher
    assert not usage.key_cert_sign
    assert not usage.crl_sign
    eku = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    wanted = (
        ExtendedKeyUsageOID.SERVER_AUTH if profile == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
    )
    assert list(eku) == [wanted]
    ski = extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    aki = extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    issuing_ski = installation.material.issuing.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier
    ).value
    assert aki.key_identifier == issuing_ski.digest
    assert aki.authority_cert_issuer is None

    crl_dp = extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert [[n.value for n in (dp.full_name or [])] for dp in crl_dp] == [
        [f"{BASE_URL}/crl/{issuing_ski.digest.hex()}.crl"]
    ]
    aia = extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [(d.access_method, d.access_location.value) for d in aia] == [
        (x509.oid.AuthorityInformationAccessOID.OCSP, f"{BASE_URL}/ocsp"),
        (x509.oid.AuthorityInformationAccessOID.CA_ISSUERS, f"{BASE_URL}/ca/issuing.crt"),
    ]
    if profile == "server":
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == ["device-api.example.com"]
        assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["192.0.2.10"]


def test_signature_hash_follows_the_ca_key(installation: Installation) -> None:
    cert = installation.authority.issue(request_for("device")).certificate
    expected = hashes.SHA384 if installation.key_type is KeyType.EC_P384 else hashes.SHA256
    assert isinstance(cert.signature_hash_algorithm, expected)
    cert.verify_directly_issued_by(installation.material.issuing)


def test_device_certificate_has_a_san_when_one_is_asked_for(installation: Installation) -> None:
    issued = installation.authority.issue(
        request_for("device", sans=["urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66"])
    )
    san = issued.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert not san.critical
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [
        "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66"
    ]
    assert issued.record.sans == ("urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",)


def test_certificate_without_subject_has_a_critical_san(installation: Installation) -> None:
    issued = installation.authority.issue(
        request_for("server", common_name=None, sans=["api.example.com"])
    )
    assert list(issued.certificate.subject) == []
    san = issued.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical  # RFC 5280 4.2.1.6
    assert lint_certificate(issued.certificate) == []


def test_rsa_device_keys_also_get_key_encipherment(installation: Installation) -> None:
    key = rsa.generate_private_key(65537, 2048)
    cert = installation.authority.issue(request_for("device", key)).certificate
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert usage.key_encipherment
    assert lint_certificate(cert) == []


def test_ed25519_device_keys_are_issued_and_verify(
    installation: Installation, tmp_path: Path
) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    cert = installation.authority.issue(request_for("device", key)).certificate
    assert cert.public_key() == key.public_key()
    assert lint_certificate(cert) == []
    result = openssl_verify(tmp_path, installation.material, cert, purpose="sslclient")
    assert result.returncode == 0, result.stderr


def test_serials_are_128_bit_random_and_unique(p256: Installation) -> None:
    key = device_key()
    issued = [p256.authority.issue(request_for("device", key)) for _ in range(60)]
    serials = [i.certificate.serial_number for i in issued]
    assert len(set(serials)) == len(serials)
    assert all(2**128 <= serial < 2**129 for serial in serials)
    assert [i.record.serial for i in issued] == [format(s, "x") for s in serials]


def test_nothing_is_copied_from_the_csr(installation: Installation) -> None:
    key = device_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Evil Corp"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "sensor-0042"),
                ]
            )
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("bank.example")]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .sign(key, hashes.SHA256())
    )
    loaded = load_csr(csr.public_bytes(serialization.Encoding.PEM))
    issued = installation.authority.issue(
        IssuanceRequest(
            public_key=loaded.public_key(),  # type: ignore[arg-type]
            profile="device",
            common_name=common_name(loaded),
        )
    )
    cert = issued.certificate
    assert cert.subject.rfc4514_string() == "CN=sensor-0042"
    assert [(e.oid, e.critical) for e in cert.extensions] == expected_extensions("device")
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]


def test_profile_validity_is_used_by_default(installation: Installation) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    cert = installation.authority.issue(request_for("client")).certificate
    after = datetime.now(UTC)
    assert before - timedelta(minutes=5) <= cert.not_valid_before_utc <= after
    assert before + timedelta(days=30) <= cert.not_valid_after_utc <= after + timedelta(days=30)


def test_validity_is_clamped_to_the_issuing_ca(tmp_path: Path) -> None:
    material = init_ca(ca_settings(tmp_path / "data", issuing_validity_days=2))
    with sqlite_engine(tmp_path / "imprint.db") as engine:
        issued = make_authority(material, engine).issue(
            request_for("device", validity=timedelta(days=30))
        )
    assert issued.certificate.not_valid_after_utc == material.issuing.not_valid_after_utc
    assert issued.record.not_after == material.issuing.not_valid_after_utc
    assert issued.certificate.not_valid_before_utc >= material.issuing.not_valid_before_utc


def test_server_profile_needs_a_san(p256: Installation) -> None:
    before = p256.recorded()
    with pytest.raises(InvalidValue, match="server profile needs"):
        p256.authority.issue(request_for("server", sans=()))
    assert p256.recorded() == before  # refused before anything was recorded


def test_unknown_profile_is_refused(p256: Installation) -> None:
    before = p256.recorded()
    with pytest.raises(UnknownProfile):
        p256.authority.issue(request_for("intermediate-ca"))
    assert p256.recorded() == before


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"common_name": None}, "common name or a subject alternative name"),
        ({"validity": timedelta(0)}, "validity must be positive"),
        ({"validity": timedelta(days=-1)}, "validity must be positive"),
        ({"common_name": "x" * 65}, "1 to 64"),
        ({"sans": ["not a name"]}, "not a DNS name"),
    ],
)
def test_bad_requests_are_refused(
    p256: Installation, changes: dict[str, object], message: str
) -> None:
    before = p256.recorded()
    with pytest.raises(InvalidValue, match=message):
        p256.authority.issue(request_for("device", **changes))
    assert p256.recorded() == before


def test_unsupported_device_key_is_refused(p256: Installation) -> None:
    with pytest.raises(UnsupportedKey):
        p256.authority.issue(request_for("device", ec.generate_private_key(ec.SECP521R1())))


# --- the ledger: record, sign, mark -------------------------------------------------------


def test_issued_certificate_is_recorded_as_issued(ca: Installation) -> None:
    issued = ca.authority.issue(request_for("server", requested_by="api-key:ops"))
    stored = ca.ledger.get(issued.record.serial)
    cert_der = der(issued.certificate)
    assert stored.status is CertificateStatus.ISSUED
    assert stored.der == cert_der
    assert stored.fingerprint_sha256 == hashlib.sha256(cert_der).hexdigest()
    assert stored.serial == format(issued.certificate.serial_number, "x")
    assert stored.issuer == ca.authority.issuing_id
    assert stored.profile == "server"
    assert stored.subject == "CN=server-0042"
    assert stored.sans == SERVER_SANS
    assert stored.requested_by == "api-key:ops"
    assert stored.not_before == issued.certificate.not_valid_before_utc
    assert stored.not_after == issued.certificate.not_valid_after_utc
    assert stored == issued.record


def test_failed_signing_leaves_a_failed_record(
    ca: Installation, monkeypatch: pytest.MonkeyPatch
) -> None:
    authority = ca.authority
    # An Ed25519 key cannot sign with the SHA-256 the authority asks for.
    broken = replace(
        authority.material,
        issuing_signer=KeySigner(ed25519.Ed25519PrivateKey.generate()),  # type: ignore[arg-type]
    )
    monkeypatch.setattr(authority, "material", broken)
    with pytest.raises(ValueError, match="ed25519"):
        authority.issue(request_for("device"))
    [stored] = ca.ledger.search()
    assert stored.status is CertificateStatus.FAILED
    assert stored.der is None
    with pytest.raises(Conflict):
        authority.revoke(stored.serial, parse_reason("superseded"))


def test_revoke_accepts_colons_and_upper_case(ca: Installation) -> None:
    authority = ca.authority
    issued = authority.issue(request_for("device"))
    spelled = ":".join(
        issued.record.serial.upper()[i : i + 2] for i in range(0, len(issued.record.serial), 2)
    )
    revoked = authority.revoke(spelled, parse_reason("superseded"))
    assert revoked.serial == issued.record.serial
    assert revoked.status is CertificateStatus.REVOKED


def test_revoking_twice_or_unknown_serials_is_refused(ca: Installation) -> None:
    authority = ca.authority
    issued = authority.issue(request_for("device"))
    authority.revoke(issued.record.serial, parse_reason("key-compromise"))
    with pytest.raises(Conflict) as caught:
        authority.revoke(issued.record.serial, parse_reason("key-compromise"))
    assert caught.value.code == "already_revoked"
    with pytest.raises(NotFound):
        authority.revoke("1" + "0" * 32, parse_reason("key-compromise"))


# --- CRLs ---------------------------------------------------------------------------------


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def test_revoked_certificate_is_listed_in_the_crl_with_its_reason(
    ca: Installation, tmp_path: Path
) -> None:
    authority = ca.authority
    kept = authority.issue(request_for("device"))
    revoked = authority.issue(request_for("device"))
    authority.revoke(revoked.record.serial, parse_reason("key-compromise"))
    crl = authority.crl()

    assert crl.is_signature_valid(authority.material.issuing.public_key())  # type: ignore[arg-type]
    assert crl.issuer == authority.material.issuing.subject
    entry = crl.get_revoked_certificate_by_serial_number(revoked.certificate.serial_number)
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise
    assert crl.get_revoked_certificate_by_serial_number(kept.certificate.serial_number) is None
    assert crl.next_update_utc is not None
    assert crl.next_update_utc - crl.last_update_utc == timedelta(hours=24)

    (tmp_path / "crl.der").write_bytes(der(crl))
    text = openssl("crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text", cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    serial = format(revoked.certificate.serial_number, "X")
    serial = "0" * (len(serial) % 2) + serial  # openssl prints whole octets
    assert f"Serial Number: {serial}\n" in text.stdout
    assert "Key Compromise" in text.stdout
    assert "Next Update:" in text.stdout
    assert "X509v3 CRL Number" in text.stdout


def test_unspecified_reason_is_left_out_of_the_crl_entry(ca: Installation) -> None:
    authority = ca.authority
    issued = authority.issue(request_for("device"))
    authority.revoke(issued.record.serial, parse_reason("unspecified"))
    entry = authority.crl().get_revoked_certificate_by_serial_number(
        issued.certificate.serial_number
    )
    assert entry is not None
    assert len(entry.extensions) == 0  # RFC 5280 5.3.1: SHOULD be absent


def test_crl_number_increases_with_each_new_crl(ca: Installation, engine: Engine) -> None:
    authority = ca.authority
    first = authority.crl()
    assert authority.crl() is first  # cached while nothing changed
    issued = authority.issue(request_for("device"))
    authority.revoke(issued.record.serial, parse_reason("superseded"))
    second = authority.crl()
    assert crl_number(second) > crl_number(first)
    fresh = make_authority(ca.material, engine)  # as another process would
    assert crl_number(fresh.crl()) > crl_number(second)


def test_root_crl_is_signed_by_the_root(ca: Installation) -> None:
    authority = ca.authority
    crl = authority.crl("root")
    assert crl.issuer == authority.material.root.subject
    assert crl.is_signature_valid(authority.material.root.public_key())  # type: ignore[arg-type]
    assert len(crl) == 0
    assert authority.crl(authority.root_id).issuer == crl.issuer
    with pytest.raises(NotFound):
        authority.crl("someone-else")


def test_openssl_rejects_a_revoked_certificate_with_the_crl(
    ca: Installation, tmp_path: Path
) -> None:
    authority = ca.authority
    good = authority.issue(request_for("device")).certificate
    bad = authority.issue(request_for("device")).certificate
    authority.revoke(format(bad.serial_number, "x"), parse_reason("key-compromise"))
    material, crl = authority.material, authority.crl()
    # -crl_check only checks the leaf, whose CRL is the issuing CA's.
    result = openssl_verify(tmp_path, material, good, purpose="sslclient", crl=crl)
    assert result.returncode == 0, result.stderr
    result = openssl_verify(tmp_path, material, bad, purpose="sslclient", crl=crl)
    assert result.returncode != 0
    assert "certificate revoked" in result.stdout + result.stderr


# --- openssl and pkilint on every profile and key type ------------------------------------


@pytest.mark.parametrize("profile", PROFILES)
def test_openssl_verifies_the_chain(
    installation: Installation, profile: str, tmp_path: Path
) -> None:
    cert = installation.authority.issue(request_for(profile)).certificate
    purpose = "sslserver" if profile == "server" else "sslclient"
    result = openssl_verify(tmp_path, installation.material, cert, purpose=purpose)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "leaf.pem: OK"


def test_openssl_refuses_a_client_certificate_as_a_server(
    installation: Installation, tmp_path: Path
) -> None:
    cert = installation.authority.issue(request_for("device")).certificate
    result = openssl_verify(tmp_path, installation.material, cert, purpose="sslserver")
    assert result.returncode != 0
    assert "unsuitable certificate purpose" in result.stdout + result.stderr


@pytest.mark.parametrize("profile", PROFILES)
def test_pkilint_finds_no_errors_in_issued_certificates(
    installation: Installation, profile: str
) -> None:
    cert = installation.authority.issue(request_for(profile)).certificate
    assert lint_certificate(cert) == []
    assert lint_issuer_and_subject(installation.material.issuing, cert) == []


def test_pkilint_finds_no_errors_in_the_ocsp_responder_certificate(
    installation: Installation,
) -> None:
    responder = OcspResponder(
        installation.authority,
        clock=SystemClock(),
        validity=timedelta(hours=1),
        cache_for=timedelta(0),
        responder_validity=timedelta(days=7),
        renew_before=timedelta(days=2),
    ).responder_certificate()
    assert lint_certificate(responder) == []
    assert lint_issuer_and_subject(installation.material.issuing, responder) == []


def test_configured_public_urls_go_into_every_profile(p256: Installation) -> None:
    """AIA (OCSP, caIssuers) and the CRL distribution point name the public URLs."""
    authority = CertificateAuthority(
        p256.material,
        p256.ledger,
        profiles=ProfileSettings(),
        base_url=BASE_URL,
        crl_validity=timedelta(hours=24),
        publication=Publication(
            crl_url="http://pki.example.net/issuing.crl",
            issuer_url="http://pki.example.net/issuing.crt",
            ocsp_url="http://ocsp.example.net/",
        ),
    )
    for profile in PROFILES:
        cert = authority.issue(request_for(profile)).certificate
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        assert [d.access_location.value for d in aia] == [
            "http://ocsp.example.net/",
            "http://pki.example.net/issuing.crt",
        ]
        crl_dp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        assert [n.value for n in crl_dp[0].full_name or []] == [
            "http://pki.example.net/issuing.crl"
        ]
        assert lint_certificate(cert) == []


def test_pkilint_finds_no_errors_in_the_ca_certificates(installation: Installation) -> None:
    material = installation.material
    assert lint_certificate(material.root) == []
    assert lint_certificate(material.issuing) == []
    assert lint_issuer_and_subject(material.root, material.issuing) == []
    assert lint_issuer_and_subject(material.root, material.root) == []


def test_pkilint_finds_no_errors_in_the_crls(installation: Installation) -> None:
    authority = installation.authority
    for reason in ("key-compromise", "unspecified", "cessation-of-operation"):
        issued = authority.issue(request_for("device"))
        authority.revoke(issued.record.serial, parse_reason(reason))
    crl = authority.crl()
    assert len(crl) >= 3
    assert lint_crl(crl) == []
    assert lint_crl(authority.crl("root")) == []  # the empty one


def test_pkilint_reports_a_broken_certificate() -> None:
    """The lint helper itself works: a certificate violating RFC 5280 is caught."""
    key = device_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "broken")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=False)
        .add_extension(x509.KeyUsage(*[False] * 9), critical=True)
        .sign(key, hashes.SHA256())
    )
    assert lint_certificate(cert) != []


# --- client certificate checks ------------------------------------------------------------


def test_device_certificate_from_our_ca_is_a_valid_client_certificate(
    installation: Installation,
) -> None:
    issued = installation.authority.issue(request_for("device"))
    material = installation.material
    chain = verify_client_certificate(
        issued.certificate, material.chain[:-1], installation.authority.trust_anchors
    )
    assert chain == [issued.certificate, material.issuing, material.root]


def test_certificate_from_another_ca_is_rejected(
    installation: Installation, p256: Installation
) -> None:
    foreign = p256.authority.issue(request_for("device")).certificate
    with pytest.raises(ChainInvalid) as caught:
        verify_client_certificate(
            foreign,
            installation.material.chain[:-1],
            installation.authority.trust_anchors,
        )
    assert caught.value.code == "chain_invalid"
    # Even when it brings its own intermediate along.
    with pytest.raises(ChainInvalid):
        verify_client_certificate(
            foreign, [p256.material.issuing], installation.authority.trust_anchors
        )


def test_server_certificate_is_not_a_client_certificate(installation: Installation) -> None:
    cert = installation.authority.issue(request_for("server")).certificate
    with pytest.raises(ChainInvalid):
        verify_client_certificate(
            cert, installation.material.chain[:-1], installation.authority.trust_anchors
        )


def test_expired_device_certificate_is_rejected(installation: Installation) -> None:
    cert = installation.authority.issue(request_for("device")).certificate
    with pytest.raises(ChainInvalid):
        verify_client_certificate(
            cert,
            installation.material.chain[:-1],
            installation.authority.trust_anchors,
            at=cert.not_valid_after_utc + timedelta(seconds=1),
        )


# --- bring your own CA, made with openssl -------------------------------------------------

OPENSSL_CONFIG = """
[req]
distinguished_name = dn
prompt = no
[dn]
[root]
basicConstraints = critical, CA:true, pathlen:1
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[intermediate]
basicConstraints = critical, CA:true, pathlen:0
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[leaf]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""


@dataclass(frozen=True)
class ExternalCA:
    directory: Path

    def read(self, name: str) -> bytes:
        return (self.directory / name).read_bytes()


def run_openssl(directory: Path, command: str) -> None:
    result = openssl(*shlex.split(command), cwd=directory)
    assert result.returncode == 0, f"openssl {command}: {result.stderr}"


@pytest.fixture(scope="module")
def external_ca(tmp_path_factory: pytest.TempPathFactory) -> ExternalCA:
    """A root, an intermediate with a password-protected key, and a leaf, all by openssl."""
    d = tmp_path_factory.mktemp("external-ca")
    (d / "openssl.cnf").write_text(OPENSSL_CONFIG)
    new_key = "genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256"
    sign = "x509 -req -sha256 -extfile openssl.cnf"
    for command in (
        f"{new_key} -out root.key",
        "req -x509 -new -key root.key -subj '/O=Example/CN=Ext Root' -days 30 -sha256"
        " -config openssl.cnf -extensions root -out root.crt",
        f"{new_key} -aes-256-cbc -pass pass:int-secret -out int.key",
        "req -new -key int.key -passin pass:int-secret -subj '/O=Example/CN=Ext Issuing'"
        " -config openssl.cnf -out int.csr",
        f"{sign} -extensions intermediate -in int.csr -CA root.crt -CAkey root.key"
        " -set_serial 0x1001 -days 20 -out int.crt",
        f"{new_key} -out leaf.key",
        "req -new -key leaf.key -subj '/CN=Ext Leaf' -config openssl.cnf -out leaf.csr",
        f"{sign} -extensions leaf -in leaf.csr -CA int.crt -CAkey int.key"
        " -passin pass:int-secret -set_serial 0x2002 -days 10 -out leaf.crt",
    ):
        run_openssl(d, command)
    return ExternalCA(d)


def test_imported_openssl_ca_issues_certificates_openssl_accepts(
    external_ca: ExternalCA, tmp_path: Path
) -> None:
    settings = ca_settings(tmp_path / "data")
    material = import_ca(
        settings,
        certificate=external_ca.read("int.crt"),
        key=external_ca.read("int.key"),
        chain=external_ca.read("root.crt"),
        key_password=b"int-secret",
    )
    external_root = x509.load_pem_x509_certificate(external_ca.read("root.crt"))
    assert material.root == external_root
    assert material.root_signer is None  # we never saw the root's key
    assert material.issuing.subject.rfc4514_string() == "CN=Ext Issuing,O=Example"

    # Re-encrypted with imprint's passphrase, and loadable from disk.
    stored_key = (settings.ca_dir / "issuing.key").read_bytes()
    assert stored_key.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert not (settings.ca_dir / "root.key").exists()
    loaded = load_ca(settings)
    assert loaded.chain == (material.issuing, external_root)

    with sqlite_engine(tmp_path / "imprint.db") as engine:
        authority = make_authority(loaded, engine)
        for profile in PROFILES:
            cert = authority.issue(request_for(profile)).certificate
            purpose = "sslserver" if profile == "server" else "sslclient"
            result = openssl_verify(tmp_path, loaded, cert, purpose=purpose)
            assert result.returncode == 0, result.stdout + result.stderr
            assert lint_certificate(cert) == []
        with pytest.raises(NotFound):  # no root key, so no root CRL
            authority.crl("root")
        assert lint_crl(authority.crl()) == []


def test_self_signed_root_can_be_imported_as_the_issuing_ca(
    external_ca: ExternalCA, tmp_path: Path
) -> None:
    settings = ca_settings(tmp_path / "data")
    material = import_ca(
        settings,
        certificate=external_ca.read("root.crt"),
        key=external_ca.read("root.key"),
        chain=None,
        key_password=None,
    )
    assert material.root == material.issuing
    assert material.chain == (material.root,)
    assert (settings.ca_dir / "root.key").read_bytes().startswith(b"-----BEGIN ENCRYPTED")
    assert load_ca(settings).root_signer is not None


@pytest.mark.parametrize(
    ("certificate", "key", "chain", "password", "message"),
    [
        ("int.crt", "root.key", "root.crt", None, "does not belong"),
        ("leaf.crt", "leaf.key", "int.crt", None, "not a CA"),
        ("int.crt", "int.key", "root.crt", b"wrong", "cannot be read"),
        ("int.crt", "int.key", "root.crt", None, "give its password"),
        ("int.crt", "int.key", None, b"int-secret", "self-signed root"),
        ("int.key", "int.key", "root.crt", b"int-secret", "not a PEM or DER certificate"),
    ],
)
def test_import_refuses_bad_material(
    external_ca: ExternalCA,
    tmp_path: Path,
    certificate: str,
    key: str,
    chain: str | None,
    password: bytes | None,
    message: str,
) -> None:
    settings = ca_settings(tmp_path / "data")
    with pytest.raises(InvalidValue, match=message):
        import_ca(
            settings,
            certificate=external_ca.read(certificate),
            key=external_ca.read(key),
            chain=external_ca.read(chain) if chain else None,
            key_password=password,
        )
    assert not settings.ca_dir.exists()  # nothing written


def test_import_over_an_existing_ca_needs_force(external_ca: ExternalCA, tmp_path: Path) -> None:
    settings = ca_settings(tmp_path / "data")
    init_ca(settings)
    arguments: dict[str, object] = {
        "certificate": external_ca.read("int.crt"),
        "key": external_ca.read("int.key"),
        "chain": external_ca.read("root.crt"),
        "key_password": b"int-secret",
    }
    with pytest.raises(Conflict):
        import_ca(settings, **arguments)  # type: ignore[arg-type]
    imported = import_ca(settings, force=True, **arguments)  # type: ignore[arg-type]
    assert load_ca(settings).issuing == imported.issuing
    assert not (settings.ca_dir / "root.key").exists()  # the old root key is gone
