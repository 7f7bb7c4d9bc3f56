"""OOB-secret attestation: the device proves it knows the secret an administrator
registered for its device id (see :mod:`imprint.provisioning.oob_secrets`).

The native request (``POST /api/v1/provision``) carries ``registration_id`` (the
device id) and ``evidence``::

    {"timestamp": <unix seconds>, "nonce": "<16..128 chars>", "mac": "<base64>"}
    mac = base64(HMAC-SHA256(secret, "imprint-oob-v1\\n" + device_id + "\\n"
                 + str(timestamp) + "\\n" + nonce + "\\n" + csr_sha256))

where ``csr_sha256`` is base64url (no padding) of SHA-256 over the CSR's DER, the key
is the secret's UTF-8 bytes, the timestamp must be within five minutes of the server's
clock and the nonce is accepted once. An idprov request (``evidence.format`` is
``"idprov"``, built by :mod:`imprint.compat.idprov`) carries idprov's signature instead:
base64(HMAC-SHA256(secret, message)) over the exact JSON bytes the device signed; the
message must name the same device id and the CSR's public key. idprov has no timestamp
or nonce: a replay can only ever fetch the certificate already issued for that key.

An EST request with HTTP Basic (``evidence.format`` is ``"http-basic"``, built by
:mod:`imprint.api.routes.est`) carries the password itself, over TLS: either the
device's registered secret (compared in constant time) or a one-time password an
administrator made for the device (:mod:`imprint.provisioning.one_time_passwords`,
looked up by its SHA-256 and spent like a secret, once).

Outcomes, in the order they are checked:

1. no secret registered for the device yet: the attestation holds the request (a
   :class:`~imprint.attestation.base.Hold` check: the Provisioner answers 202 and
   creates nothing); the device retries later;
2. the MAC does not verify with any registered secret: ``signature_invalid``;
3. the secret is past its ``valid_until``: ``secret_expired``;
4. the secret was used by a provisioning already: ``secret_used``, unless this is a
   retry with the same key by the device provisioned with it (it gets the same
   certificate back), or an administrator factory-reset the device since;
5. the nonce was seen before: ``replay_detected``.

The secret is spent by the approved request itself (an ``on_approved`` effect, in its
unit of work), and checked again on the locked device, so of two requests racing with
one secret and different keys only the first is issued. It keys the response MAC, so
the device can tell the answer came from this server.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

from cryptography.hazmat.primitives import serialization

from imprint.attestation.base import (
    Attestation,
    Evidence,
    EvidenceMissing,
    Hold,
    IdentityNotEnrolled,
    KeyMismatch,
    RequestExpired,
    SecretExpired,
    SecretUsed,
    SignatureInvalid,
)
from imprint.errors import InvalidValue, NotFound
from imprint.pki.csr import csr_sha256
from imprint.pki.keys import public_key_sha256
from imprint.provisioning.devices import Device, DeviceStatus, DeviceStore, Nonce
from imprint.provisioning.enrollments import (
    DeviceIdRule,
    Enrollment,
    EnrollmentKind,
    EnrollmentStore,
    Mechanism,
)
from imprint.provisioning.one_time_passwords import OneTimePasswordStore, password_sha256
from imprint.provisioning.oob_secrets import OobSecret, OobSecretStore

__all__ = [
    "CLOCK_SKEW",
    "HTTP_BASIC_FORMAT",
    "IDPROV_FORMAT",
    "NONCE_SCOPE",
    "OobSecretAttestor",
    "idprov_signature",
    "oob_mac",
]

NONCE_SCOPE = "oob-secret"
CLOCK_SKEW = timedelta(seconds=300)
NONCE_LIFETIME = timedelta(seconds=600)
IDPROV_FORMAT = "idprov"
HTTP_BASIC_FORMAT = "http-basic"
_LABEL = "imprint-oob-v1"
_NONCE = re.compile(r"[A-Za-z0-9._~+/=-]{16,128}")
_DEVICE_ID = re.compile(r"[\x21-\x7e]{1,200}")
_MAX_ENROLLMENTS = 10_000
_WRONG = "the MAC does not prove the secret registered for this device"


def oob_mac(secret: str, device_id: str, timestamp: int, nonce: str, csr_digest: str) -> str:
    """The native evidence MAC: base64 of HMAC-SHA256 over the labelled fields.

    Args:
        secret: the device's OOB secret (its UTF-8 bytes are the key).
        device_id: the registration id the device claims.
        timestamp: unix seconds, within five minutes of the server's clock.
        nonce: 16 to 128 of ``A-Z a-z 0-9 . _ ~ + / = -``, used once.
        csr_digest: base64url (no padding) of SHA-256 over the CSR's DER.
    """
    return base64.b64encode(_native_mac(secret, device_id, timestamp, nonce, csr_digest)).decode()


def _native_mac(secret: str, device_id: str, timestamp: int, nonce: str, digest: str) -> bytes:
    message = f"{_LABEL}\n{device_id}\n{timestamp}\n{nonce}\n{digest}".encode()
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()


def idprov_signature(secret: str, message: bytes) -> str:
    """idprov's signature: base64 of HMAC-SHA256 keyed with the raw secret."""
    return base64.b64encode(
        hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()
    ).decode()


def _b64(value: object, name: str) -> bytes:
    if not isinstance(value, str) or not value or len(value) > 200:
        raise InvalidValue(f"evidence.{name}: base64 of an HMAC-SHA256")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidValue(f"evidence.{name}: not base64") from None


@dataclass(frozen=True, slots=True)
class _NativeProof:
    device_id: str
    timestamp: int
    nonce: str
    mac: bytes
    digest: str

    @classmethod
    def read(cls, evidence: Evidence, device_id: str) -> _NativeProof:
        fields = evidence.fields
        missing = [n for n in ("timestamp", "nonce", "mac") if fields.get(n) is None]
        if missing:
            raise EvidenceMissing(f"evidence: {', '.join(missing)} required for oob-secret")
        timestamp, nonce = fields["timestamp"], fields["nonce"]
        if isinstance(timestamp, bool) or not isinstance(timestamp, int):
            raise InvalidValue("evidence.timestamp: unix seconds as an integer")
        if not isinstance(nonce, str) or not _NONCE.fullmatch(nonce):
            raise InvalidValue("evidence.nonce: 16 to 128 of A-Z a-z 0-9 . _ ~ + / = -")
        mac = _b64(fields["mac"], "mac")
        if abs(evidence.at.timestamp() - timestamp) > CLOCK_SKEW.total_seconds():
            raise RequestExpired("the timestamp is more than five minutes off the server's clock")
        return cls(device_id, timestamp, nonce, mac, csr_sha256(evidence.signing_request()))

    def verifies(self, secret: str) -> bool:
        expected = _native_mac(secret, self.device_id, self.timestamp, self.nonce, self.digest)
        return hmac.compare_digest(expected, self.mac)


@dataclass(frozen=True, slots=True)
class _IdprovProof:
    message: bytes
    signature: bytes

    @classmethod
    def read(cls, evidence: Evidence, device_id: str) -> _IdprovProof:
        fields = evidence.fields
        message, signature = fields.get("message"), fields.get("signature")
        if not isinstance(message, str) or not message:
            raise EvidenceMissing("evidence.message: the JSON the idprov device signed")
        if not isinstance(signature, str):
            raise EvidenceMissing("evidence.signature: the idprov request's signature")
        try:
            signed = json.loads(message)
        except ValueError:
            raise InvalidValue("evidence.message: not JSON") from None
        if not isinstance(signed, dict) or signed.get("deviceID") != device_id:
            raise InvalidValue("evidence.message: must name the registration id as deviceID")
        pem = signed.get("publicKeyPEM")
        try:
            signed_key = serialization.load_pem_public_key(str(pem).encode("utf-8"))
        except (ValueError, TypeError, UnicodeEncodeError):
            raise InvalidValue("evidence.message: publicKeyPEM is not a PEM public key") from None
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        der = serialization.Encoding.DER
        if signed_key.public_bytes(
            der, spki
        ) != evidence.signing_request().public_key().public_bytes(der, spki):
            raise KeyMismatch("the signed public key is not the key to be certified")
        # An unsigned request still learns that it must wait for a secret to be registered.
        raw = _b64(signature, "signature") if signature else b""
        return cls(message.encode("utf-8"), raw)

    def verifies(self, secret: str) -> bool:
        expected = hmac.new(secret.encode("utf-8"), self.message, hashlib.sha256).digest()
        return hmac.compare_digest(expected, self.signature)


@dataclass(frozen=True, slots=True)
class _PasswordProof:
    password: str

    @classmethod
    def read(cls, evidence: Evidence) -> _PasswordProof:
        password = evidence.fields.get("password")
        if not isinstance(password, str) or not password:
            raise EvidenceMissing("HTTP Basic: the password is required")
        if len(password) > 1024:
            raise InvalidValue("HTTP Basic: the password is too long")
        evidence.signing_request()
        return cls(password)

    def verifies(self, secret: str) -> bool:
        return hmac.compare_digest(secret.encode("utf-8"), self.password.encode("utf-8"))


class OobSecretAttestor:
    """Checks a device's proof of its OOB secret; spends the secret once it is issued."""

    mechanism = Mechanism.OOB_SECRET
    guessable = True

    def __init__(
        self,
        secrets: OobSecretStore,
        enrollments: EnrollmentStore,
        devices: DeviceStore,
        one_time_passwords: OneTimePasswordStore | None = None,
    ) -> None:
        self._one_time = one_time_passwords
        self._secrets = secrets
        self._enrollments = enrollments
        self._devices = devices

    def attest(self, evidence: Evidence) -> Attestation:
        """Verify the proof; nothing is written unless every check passed.

        Raises:
            EvidenceMissing: no registration id, or a proof field is absent.
            InvalidValue: a proof field is malformed.
            RequestExpired: the timestamp is more than five minutes off.
            IdentityNotEnrolled: no (open) oob-secret enrollment for this device.
            SignatureInvalid: the MAC does not verify with the registered secret.
            KeyMismatch: an idprov message signed another public key.
            SecretExpired: the secret is past its validity.
            SecretUsed: the secret was spent on another provisioning.
        """
        device_id = _registration_id(evidence)
        form = evidence.fields.get("format")
        proof: _NativeProof | _IdprovProof | _PasswordProof
        if form == HTTP_BASIC_FORMAT:
            proof = _PasswordProof.read(evidence)
        elif form == IDPROV_FORMAT:
            proof = _IdprovProof.read(evidence, device_id)
        else:
            proof = _NativeProof.read(evidence, device_id)
        named = self._named(evidence.enrollment_id)
        admits = partial(_admits, named, device_id)
        if isinstance(proof, _PasswordProof):
            one_time = self._one_time_password(proof, device_id, admits, evidence)
            if one_time is not None:
                return one_time
        # The device's secrets by its id, kept where an enrollment that admits the device
        # holds them (the enrollments come from their cache): one query.
        registered = [
            (secret, enrollment)
            for secret in self._secrets.for_device(device_id)
            if (enrollment := self._enrollment(secret.enrollment_id)) is not None
            and admits(enrollment)
        ]
        if not registered and isinstance(proof, _PasswordProof):
            # A password that is neither a one-time password nor a registered secret is
            # wrong now, not early: the device cannot have it from anywhere else.
            raise SignatureInvalid("the password is not valid for this device")
        if not registered:
            return Attestation(
                enrollment=self._waiting_in(self._candidates(named, device_id), evidence.at),
                device_id=device_id,
                identity=f"oob-secret:{device_id}",
                checks=(_await_secret,),
            )
        verified = next(((s, e) for s, e in registered if proof.verifies(s.secret)), None)
        if verified is None:
            raise SignatureInvalid(_WRONG)
        secret, enrollment = verified
        if enrollment.device_id_rule is not DeviceIdRule.REGISTRATION_ID:
            raise IdentityNotEnrolled(
                f"enrollment {enrollment.id!r} names devices by "
                f"{enrollment.device_id_rule.value}; oob-secret needs registration-id"
            )
        if secret.expired(evidence.at):
            raise SecretExpired("the out-of-band secret for this device has expired")
        if secret.used_at is not None:  # then only the device may say it is a retry
            self._refuse_spent(secret, self._devices.find(enrollment.owner, device_id), evidence)
        nonce = None
        if isinstance(proof, _NativeProof):
            expires = datetime.fromtimestamp(proof.timestamp, UTC) + NONCE_LIFETIME
            nonce = Nonce(NONCE_SCOPE, proof.nonce, expires)
        return Attestation(
            enrollment=enrollment,
            device_id=device_id,
            identity=f"oob-secret:{enrollment.id}",
            response_key=secret.secret.encode("utf-8"),
            claims={
                "registration_id": device_id,
                "format": form if isinstance(form, str) and form else "imprint",
            },
            device_checks=(partial(self._still_unspent, secret, evidence),),
            on_approved=(partial(self._spend, enrollment.id, device_id),),
            nonce=nonce,
        )

    def _one_time_password(
        self,
        proof: _PasswordProof,
        device_id: str,
        admits: Callable[[Enrollment], bool],
        evidence: Evidence,
    ) -> Attestation | None:
        """The attestation of a one-time password, None if the password is none. It is
        checked again under the device's lock and spent in the request's transaction."""
        if self._one_time is None:
            return None
        digest = password_sha256(proof.password)
        found = self._one_time.find(digest, device_id)
        enrollment = None if found is None else self._enrollment(found.enrollment_id)
        if found is None or enrollment is None or not admits(enrollment):
            return None
        if found.expired(evidence.at):
            raise SecretExpired("the one-time password has expired")
        if found.used_at is not None:  # then only the device may say it is a retry
            device = self._devices.find(enrollment.owner, device_id)
            _refuse_spent_password(found.used_at, device, evidence)
        return Attestation(
            enrollment=enrollment,
            device_id=device_id,
            identity=f"one-time-password:{found.id}",
            claims={"registration_id": device_id, "one_time_password": found.id},
            device_checks=(partial(self._password_unspent, digest, found.enrollment_id, evidence),),
            on_approved=(partial(self._spend_password, found.id),),
        )

    def _password_unspent(
        self, digest: str, enrollment_id: str, evidence: Evidence, device: Device | None
    ) -> None:
        """The one-time password as it is under the device's lock: of two requests with
        it, the first to commit wins."""
        assert self._one_time is not None
        now = self._one_time.find(digest, evidence.registration_id or "", [enrollment_id])
        if now is None:
            raise SecretUsed("the one-time password was withdrawn meanwhile")
        _refuse_spent_password(now.used_at, device, evidence)

    def _spend_password(self, password_id: str, at: datetime) -> None:
        assert self._one_time is not None
        self._one_time.mark_used(password_id, at.replace(microsecond=0))

    def _spend(self, enrollment_id: str, device_id: str, at: datetime) -> None:
        """A certificate goes out: the secret is spent (kept, for retries and MACs)."""
        # Kept to the second, like device lifecycle times (see _may_reuse).
        self._secrets.mark_used(enrollment_id, device_id, at.replace(microsecond=0))

    def _still_unspent(self, secret: OobSecret, evidence: Evidence, device: Device | None) -> None:
        """The secret as it is now that the request holds the device's lock: a request
        that spent it meanwhile (another key) wins."""
        now = self._secrets.get(secret.enrollment_id, secret.device_id)
        if now is None or now.secret != secret.secret:
            raise SecretUsed("the out-of-band secret for this device was replaced meanwhile")
        self._refuse_spent(now, device, evidence)

    def _refuse_spent(self, secret: OobSecret, device: Device | None, evidence: Evidence) -> None:
        if secret.used_at is not None and not _may_reuse(device, secret.used_at, evidence):
            raise SecretUsed(
                "the out-of-band secret for this device was used already; "
                "register a new one to provision again"
            )

    def _named(self, enrollment_id: str | None) -> Enrollment | None:
        """The oob-secret enrollment the request names, if it names one."""
        if enrollment_id is None:
            return None
        named = self._enrollment(enrollment_id)
        if named is None or named.mechanism is not Mechanism.OOB_SECRET:
            raise IdentityNotEnrolled(f"no oob-secret enrollment {enrollment_id!r}")
        return named

    def _enrollment(self, enrollment_id: str) -> Enrollment | None:
        try:
            return self._enrollments.get(enrollment_id)
        except NotFound:
            return None

    def _candidates(self, named: Enrollment | None, device_id: str) -> Sequence[Enrollment]:
        """The named enrollment, else every enabled one that could admit the device."""
        if named is not None:
            return [named]
        # The enabled groups and this device's own individual enrollments, by query.
        found = [
            *self._enrollments.search(
                mechanism=Mechanism.OOB_SECRET,
                enabled=True,
                kind=EnrollmentKind.GROUP,
                limit=_MAX_ENROLLMENTS,
            ),
            *(e for e in self._enrollments.naming(Mechanism.OOB_SECRET, device_id) if e.enabled),
        ]
        return [e for e in found if _admits(None, device_id, e)]

    def _waiting_in(self, candidates: Sequence[Enrollment], at: datetime) -> Enrollment:
        """Where a device without a secret waits: its own individual enrollment first."""
        ordered = sorted(candidates, key=lambda e: (e.kind is EnrollmentKind.GROUP, e.id))
        for enrollment in ordered:
            if enrollment.is_open(at):
                return enrollment
        raise IdentityNotEnrolled("no open oob-secret enrollment admits this device")


def _admits(named: Enrollment | None, device_id: str, enrollment: Enrollment) -> bool:
    """Whether a secret held in ``enrollment`` may attest ``device_id``: the named
    enrollment's only, else an enabled oob-secret group's or the device's own
    individual enrollment's."""
    if named is not None:
        return enrollment.id == named.id
    return (
        enrollment.mechanism is Mechanism.OOB_SECRET
        and enrollment.enabled
        and (enrollment.kind is EnrollmentKind.GROUP or enrollment.registration_id == device_id)
    )


def _await_secret(_evidence: Evidence) -> Hold:
    return Hold("waiting for the out-of-band secret")


def _refuse_spent_password(
    used_at: datetime | None, device: Device | None, evidence: Evidence
) -> None:
    if used_at is not None and not _may_reuse(device, used_at, evidence):
        raise SecretUsed("the one-time password was used already")


def _may_reuse(device: Device | None, used_at: datetime, evidence: Evidence) -> bool:
    """A spent secret still admits the device's own retry, or a reset device."""
    if device is None:
        return False
    if device.status is DeviceStatus.PROVISIONED:
        return device.public_key_sha256 == public_key_sha256(
            evidence.signing_request().public_key()
        )
    if device.status is DeviceStatus.RESET:
        # A reset in the same second as the use still came after it: a device is
        # reset only once provisioned.
        return device.updated_at >= used_at
    return False


def _registration_id(evidence: Evidence) -> str:
    value = evidence.registration_id
    if not value:
        raise EvidenceMissing("registration_id: the device id is required for oob-secret")
    if not _DEVICE_ID.fullmatch(value):
        raise InvalidValue("registration_id: 1 to 200 printable ASCII characters, no spaces")
    return value
