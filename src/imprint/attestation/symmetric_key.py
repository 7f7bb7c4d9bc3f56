"""Symmetric-key attestation: an HMAC token under a key derived from a group key.

An enrollment *group* holds a group key (at least 32 random bytes, sealed at rest).
Each device of the group holds only its own device key,
``HMAC-SHA256(group_key, device_id)``, written at the factory; a device that leaks
its key exposes nobody else. An *individual* enrollment's device holds the
enrollment's key itself.

The device proves it holds its key with a short-lived token bound to the CSR::

    token = base64url(HMAC-SHA256(device_key,
                registration_id "\\n" expiry "\\n" nonce "\\n" csr_sha256))

where ``csr_sha256`` is base64url (no padding) of SHA-256 over the CSR's DER, so a
token cannot be replayed with another key pair, and the nonce is accepted once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from imprint.attestation.base import (
    Attestation,
    Evidence,
    EvidenceMissing,
    IdentityNotEnrolled,
    RequestExpired,
    SignatureInvalid,
)
from imprint.errors import InvalidValue, NotFound
from imprint.pki.csr import csr_sha256
from imprint.provisioning.devices import Nonce
from imprint.provisioning.enrollments import (
    DeviceIdRule,
    Enrollment,
    EnrollmentKind,
    EnrollmentStore,
    Mechanism,
)

__all__ = [
    "MAX_TOKEN_LIFETIME",
    "NONCE_SCOPE",
    "SymmetricKeyAttestor",
    "csr_sha256",
    "derive_device_key",
    "symmetric_key_token",
]

NONCE_SCOPE = "symmetric-key"
MAX_TOKEN_LIFETIME = timedelta(hours=1)
_NONCE = re.compile(r"[A-Za-z0-9._~+/=-]{16,128}")
_REGISTRATION_ID = re.compile(r"[\x21-\x7e]{1,200}")
_WRONG = "the token does not prove this registration id"
_ENROLLMENT_SCAN_LIMIT = 10_000


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def derive_device_key(group_key: bytes, device_id: str) -> bytes:
    """The key of one device of a symmetric-key group: HMAC-SHA256(group_key, device_id).

    Args:
        group_key: the enrollment group's key (raw bytes, at least 32).
        device_id: the device's registration id.

    Returns:
        32 raw bytes; base64 them to hand them to a person.
    """
    return hmac.new(group_key, device_id.encode("utf-8"), hashlib.sha256).digest()


def symmetric_key_token(
    device_key: bytes, registration_id: str, expiry: int, nonce: str, csr_digest: str
) -> str:
    """The token a device sends: base64url (no padding) of the HMAC over the four fields.

    Args:
        device_key: the device's key (raw bytes).
        registration_id: the device id it claims.
        expiry: unix seconds after which the token is refused (at most an hour ahead).
        nonce: 16 to 128 characters of ``A-Z a-z 0-9 . _ ~ + / = -``, used once.
        csr_digest: :func:`csr_sha256` of the CSR sent with the token.
    """
    return _b64url(_token_mac(device_key, registration_id, expiry, nonce, csr_digest))


def _token_mac(
    device_key: bytes, registration_id: str, expiry: int, nonce: str, csr_digest: str
) -> bytes:
    message = f"{registration_id}\n{expiry}\n{nonce}\n{csr_digest}".encode()
    return hmac.new(device_key, message, hashlib.sha256).digest()


def _registration_id(evidence: Evidence) -> str:
    value = evidence.registration_id
    if not value:
        raise EvidenceMissing("registration_id: the device id is required for symmetric-key")
    if not _REGISTRATION_ID.fullmatch(value):
        raise InvalidValue("registration_id: 1 to 200 printable ASCII characters, no spaces")
    return value


def _token_bytes(value: object) -> bytes:
    if not isinstance(value, str) or not value or len(value) > 100:
        raise InvalidValue("evidence.token: the base64url HMAC-SHA256 token")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise InvalidValue("evidence.token: not base64url") from None
    return raw


class SymmetricKeyAttestor:
    """Checks a symmetric-key token and names the device by its registration id."""

    mechanism = Mechanism.SYMMETRIC_KEY
    guessable = False

    def __init__(self, enrollments: EnrollmentStore) -> None:
        self._enrollments = enrollments

    def attest(self, evidence: Evidence) -> Attestation:
        """Verify the token; its nonce goes back in the attestation, for the use case to
        spend once the request is authorized.

        Raises:
            EvidenceMissing: no registration id, expiry, nonce or token.
            InvalidValue: one of them is malformed.
            RequestExpired: the expiry is past, or more than an hour ahead.
            SignatureInvalid: no enrollment's key makes this token (also for unknown ids).
            IdentityNotEnrolled: the enrollment does not name devices by registration id.
        """
        device_id = _registration_id(evidence)
        fields = evidence.fields
        missing = [name for name in ("expiry", "nonce", "token") if fields.get(name) is None]
        if missing:
            raise EvidenceMissing(f"evidence: {', '.join(missing)} required for symmetric-key")
        expiry, nonce = fields["expiry"], fields["nonce"]
        if isinstance(expiry, bool) or not isinstance(expiry, int):
            raise InvalidValue("evidence.expiry: unix seconds as an integer")
        if not isinstance(nonce, str) or not _NONCE.fullmatch(nonce):
            raise InvalidValue("evidence.nonce: 16 to 128 of A-Z a-z 0-9 . _ ~ + / = -")
        token = _token_bytes(fields["token"])
        now = evidence.at
        if expiry <= now.timestamp():
            raise RequestExpired("the token has expired")
        if expiry > (now + MAX_TOKEN_LIFETIME).timestamp():
            raise RequestExpired("the token's expiry is more than an hour ahead")
        digest = csr_sha256(evidence.signing_request())
        enrollment = self._match(evidence.enrollment_id, device_id, expiry, nonce, digest, token)
        if enrollment.device_id_rule is not DeviceIdRule.REGISTRATION_ID:
            raise IdentityNotEnrolled(
                f"enrollment {enrollment.id!r} names devices by "
                f"{enrollment.device_id_rule.value}; symmetric-key needs registration-id"
            )
        return Attestation(
            enrollment=enrollment,
            device_id=device_id,
            identity=f"symmetric-key:{enrollment.id}",
            claims={"registration_id": device_id},
            nonce=Nonce(NONCE_SCOPE, nonce, datetime.fromtimestamp(expiry, UTC)),
        )

    def _match(
        self,
        enrollment_id: str | None,
        device_id: str,
        expiry: int,
        nonce: str,
        digest: str,
        token: bytes,
    ) -> Enrollment:
        """The enrollment whose key made the token; SignatureInvalid when none did."""
        for enrollment in self._candidates(enrollment_id, device_id):
            assert enrollment.group_key is not None  # validated on creation
            key = (
                enrollment.group_key
                if enrollment.kind is EnrollmentKind.INDIVIDUAL
                else derive_device_key(enrollment.group_key, device_id)
            )
            expected = _token_mac(key, device_id, expiry, nonce, digest)
            if hmac.compare_digest(expected, token):
                return enrollment
        raise SignatureInvalid(_WRONG)

    def _candidates(self, enrollment_id: str | None, device_id: str) -> Iterator[Enrollment]:
        """The named enrollment, else this device's individual one, else each enabled group."""
        if enrollment_id is not None:
            try:
                named = self._enrollments.get(enrollment_id)
            except NotFound:
                named = None
            if named is None or named.mechanism is not Mechanism.SYMMETRIC_KEY:
                raise IdentityNotEnrolled(f"no symmetric-key enrollment {enrollment_id!r}")
            if named.kind is EnrollmentKind.GROUP or named.registration_id == device_id:
                yield named
            return
        # Two narrow queries, not every enrollment per request: the device's own individual
        # enrollment (a disabled one is refused by policy), else each enabled group.
        individual = self._enrollments.naming(Mechanism.SYMMETRIC_KEY, device_id)
        if individual:
            yield from individual
            return
        yield from self._enrollments.search(
            mechanism=Mechanism.SYMMETRIC_KEY,
            enabled=True,
            kind=EnrollmentKind.GROUP,
            limit=_ENROLLMENT_SCAN_LIMIT,
        )
