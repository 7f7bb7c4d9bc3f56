"""Registration-key attestation: the midPoint key-distribution story, done right.

The owner types the enrollment's registration key (``HQ481047-1JWORF43``) into a
device. The device sends its serial number as ``registration_id`` and only the first
half of the key, in ``evidence.key_half`` or, better, in the ``X-Imprint-Key-Half``
header so it stays out of URLs and request logs. The server finds the key by the
half's SHA-256 and answers with the bundle's secrets sealed, and the answer
authenticated, under the *second* half, which never crosses the network.

The device id is the serial, scoped to the enrollment's owner organization: the
same serial under another organization is another device. A wrong half is counted
by the provisioning rate limiter like any failed attestation.
"""

from __future__ import annotations

import hmac
import re

from imprint.attestation.base import (
    Attestation,
    Evidence,
    EvidenceMissing,
    IdentityNotEnrolled,
    SignatureInvalid,
)
from imprint.errors import InvalidValue, NotFound
from imprint.provisioning.enrollments import (
    DeviceIdRule,
    Enrollment,
    EnrollmentKind,
    EnrollmentStore,
    Mechanism,
)
from imprint.provisioning.registration_keys import (
    RegistrationKeyStore,
    lookup_sha256,
    valid_half,
)

__all__ = ["KEY_HALF_HEADER", "RegistrationKeyAttestor"]

KEY_HALF_HEADER = "X-Imprint-Key-Half"
_SERIAL = re.compile(r"[\x21-\x7e]{1,200}")
_WRONG = "the registration key does not admit this device"
_RULES = (DeviceIdRule.REGISTRATION_ID, DeviceIdRule.SERIAL_NUMBER)


def _serial(evidence: Evidence) -> str:
    value = evidence.registration_id
    if not value:
        raise EvidenceMissing("registration_id: the device's serial number is required")
    if not _SERIAL.fullmatch(value):
        raise InvalidValue("registration_id: 1 to 200 printable ASCII characters, no spaces")
    return value


def _key_half(evidence: Evidence) -> str:
    value = evidence.fields.get("key_half")
    if value is None:
        raise EvidenceMissing(
            f"the first half of the registration key is required (header {KEY_HALF_HEADER} "
            "or evidence.key_half)"
        )
    if not isinstance(value, str) or not valid_half(value):
        raise InvalidValue("key_half: 8 to 32 of A-Z 0-9, the part before the '-'")
    return value


class RegistrationKeyAttestor:
    """Admits a serial number with the first half of its enrollment's registration key."""

    mechanism = Mechanism.REGISTRATION_KEY
    guessable = True

    def __init__(self, keys: RegistrationKeyStore, enrollments: EnrollmentStore) -> None:
        self._keys = keys
        self._enrollments = enrollments

    def attest(self, evidence: Evidence) -> Attestation:
        """Match the key half; the second half becomes the response key.

        Raises:
            EvidenceMissing: no serial number or no key half.
            InvalidValue: either is malformed.
            SignatureInvalid: no active key has this first half (also after a rotation's
                transition), or it belongs to another enrollment than the one named.
            IdentityNotEnrolled: the enrollment does not name devices by serial.
        """
        serial = _serial(evidence)
        half = _key_half(evidence)
        key = self._keys.find(lookup_sha256(half))
        if (
            key is None
            or not hmac.compare_digest(key.first_half.encode(), half.encode())
            or not key.is_active(evidence.at)
        ):
            raise SignatureInvalid(_WRONG)
        enrollment = self._enrollment(key.enrollment_id)
        if (
            enrollment is None
            or enrollment.mechanism is not Mechanism.REGISTRATION_KEY
            or evidence.enrollment_id not in (None, enrollment.id)
            or (
                enrollment.kind is EnrollmentKind.INDIVIDUAL
                and enrollment.registration_id != serial
            )
        ):
            raise SignatureInvalid(_WRONG)
        if enrollment.device_id_rule not in _RULES:
            raise IdentityNotEnrolled(
                f"enrollment {enrollment.id!r} names devices by "
                f"{enrollment.device_id_rule.value}; registration-key uses the serial number"
            )
        return Attestation(
            enrollment=enrollment,
            device_id=serial,
            identity=f"registration-key:{enrollment.id}",
            response_key=key.second_half.encode("ascii"),
            claims={"registration_key": key.id, "key_state": key.state.value},
        )

    def _enrollment(self, enrollment_id: str) -> Enrollment | None:
        try:
            return self._enrollments.get(enrollment_id)
        except NotFound:
            return None
