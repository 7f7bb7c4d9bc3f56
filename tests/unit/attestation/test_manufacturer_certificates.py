"""The manufacturer CA certificates the TLS gate trusts: every certificate of the x509
enrollments' chains once, in the order first seen."""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography import x509

from imprint.attestation.x509 import manufacturer_certificates
from imprint.provisioning.enrollments import (
    Enrollment,
    EnrollmentKind,
    Mechanism,
    X509Material,
)
from tests.integration.test_isolation import ca_pem

NOW = datetime.now(UTC)


def ca(name: str) -> str:
    return ca_pem(name)[0]


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
