"""The manufacturer CA certificates the TLS gate trusts: every certificate of the x509
enrollments' chains once, in the order first seen."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from imprint.attestation.x509 import manufacturer_certificates
from imprint.provisioning.enrollments import (
    Enrollment,
    EnrollmentKind,
    Mechanism,
    X509Material,
)

KEY = ec.generate_private_key(ec.SECP256R1())
NOW = datetime.now(UTC)


def ca(name: str) -> str:
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(KEY, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def enrollment(number: int, *chain: str) -> Enrollment:
    return Enrollment(
        id=f"e{number}", kind=EnrollmentKind.GROUP, mechanism=Mechanism.X509, owner="acme",
        created_at=NOW, updated_at=NOW, x509=X509Material(certificate_chain=chain),
    )  # fmt: skip


def names(certificates: list[x509.Certificate]) -> list[str]:
    return [c.subject.rfc4514_string() for c in certificates]


def test_each_ca_once_in_the_order_first_seen() -> None:
    intermediate, root, other = ca("intermediate"), ca("root"), ca("other root")
    oob = Enrollment(
        id="oob", kind=EnrollmentKind.GROUP, mechanism=Mechanism.OOB_SECRET, owner="acme",
        created_at=NOW, updated_at=NOW,
    )  # fmt: skip
    found = manufacturer_certificates(
        [
            enrollment(1, intermediate, root),
            oob,
            enrollment(2, other),
            enrollment(3, root + "\n"),  # the same certificate, another text, another object
            enrollment(4, intermediate, root),
        ]
    )
    assert names(found) == ["CN=intermediate", "CN=root", "CN=other root"]
