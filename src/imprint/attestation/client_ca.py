"""client-ca self-provisioning: a device certificate signed by a trusted client CA.

The device presents its own certificate over mutual TLS. If it leads to one of an
enabled client-ca enrollment's CAs, the device is provisioned on this first contact:
its id is the certificate's common name and the certificate is pinned, so a different
certificate with the same common name is refused until a factory reset.

A trusted CA may be the one that signed the device certificate (an intermediate
trusted by itself), or a CA above it, typically the root: the device then sends its
intermediate CAs with its certificate, and the path leaf -> intermediates -> trusted
CA must hold (every CA on it valid now).
"""

from __future__ import annotations

from datetime import datetime
from functools import partial

from cryptography.x509.oid import NameOID

from imprint.attestation.base import (
    Attestation,
    CertificateExpired,
    Evidence,
    EvidenceMissing,
    IdentityNotEnrolled,
    IdentityTaken,
)
from imprint.attestation.peer_chain import build_path, refuse_without_client_auth
from imprint.provisioning.client_cas import ClientCAStore, fingerprint
from imprint.provisioning.devices import Device, DeviceStatus
from imprint.provisioning.enrollments import Enrollment, EnrollmentStore, Mechanism

__all__ = ["ClientCAAttestor"]

MAX_ENROLLMENTS = 1000


class ClientCAAttestor:
    mechanism = Mechanism.CLIENT_CA
    guessable = False

    def __init__(self, *, enrollments: EnrollmentStore, cas: ClientCAStore) -> None:
        self._enrollments = enrollments
        self._cas = cas

    def _candidates(self, enrollment_id: str | None) -> list[Enrollment]:
        if enrollment_id is not None:
            enrollment = self._enrollments.get(enrollment_id)
            return [enrollment] if enrollment.mechanism is Mechanism.CLIENT_CA else []
        return list(self._enrollments.search(mechanism=Mechanism.CLIENT_CA, limit=MAX_ENROLLMENTS))

    def attest(self, evidence: Evidence) -> Attestation:
        leaf = evidence.client_certificate
        if leaf is None:
            raise EvidenceMissing("client-ca needs the device certificate over mutual TLS")
        at: datetime = evidence.at
        if not leaf.not_valid_before_utc <= at <= leaf.not_valid_after_utc:
            raise CertificateExpired("the device certificate is not valid now")
        names = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not names or not isinstance(names[0].value, str) or not names[0].value:
            raise IdentityNotEnrolled("the device certificate has no common name")
        common_name = names[0].value
        refuse_without_client_auth(leaf)  # none at all: plain `openssl x509 -req` output
        pin = fingerprint(leaf)
        for enrollment in self._candidates(evidence.enrollment_id):
            if not enrollment.enabled:
                continue  # a disabled list admits nobody
            trusted = [ca.certificate() for ca in self._cas.for_enrollment(enrollment.id)]
            path = build_path(leaf, evidence.client_intermediates, trusted)
            if path is None:
                continue
            lapsed = [
                c for c in path[1:] if not c.not_valid_before_utc <= at <= c.not_valid_after_utc
            ]
            if lapsed:
                raise CertificateExpired(
                    f"the client CA {lapsed[0].subject.rfc4514_string()} is not valid now"
                )
            # Checked on the locked device, where the use case reads it anyway (a
            # concurrent request with another certificate may have pinned it meanwhile).
            pinned = partial(_check_pin, common_name=common_name, pin=pin)
            return Attestation(
                enrollment=enrollment,
                device_id=common_name,
                identity=f"client-ca:sha256:{pin}",
                pinned_fingerprint=pin,
                device_checks=(pinned,),
            )
        raise IdentityNotEnrolled("no enabled client-ca enrollment trusts the certificate's issuer")


def _check_pin(device: Device | None, *, common_name: str, pin: str) -> None:
    """A common name stays with the certificate it was first provisioned with.

    Raises:
        IdentityTaken: the device is pinned to another certificate.
    """
    if (
        device is not None
        and device.status is not DeviceStatus.RESET
        and device.pinned_fingerprint not in (None, pin)
    ):
        raise IdentityTaken(f"device {common_name!r} is pinned to another certificate")
