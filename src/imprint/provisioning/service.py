"""The one provisioning use case that every route calls.

find the enrollment → attest → apply policy (window, key type, device-id pattern,
quota, approval) → issue → record → build the bundle.

The attestor finds the enrollment (only it can tell which one the evidence matches)
and names the device, and returns the policy its kind of proof brings as checks and
effects this use case applies (:class:`~imprint.attestation.base.Attestation`): request
checks first (one may hold the request), device checks on the locked device, approval
effects in the unit of work. Nothing here asks which mechanism it was.

Everything after attestation is the same for every mechanism, and runs in one unit of
work that first locks the device (:meth:`DeviceStore.lock`): requests for one device
take turns, each deciding on the device as the one before left it. In that
transaction: the certificate's record and signature, the device, the revocation of
every other certificate the device still holds (superseded), its channel, the step
records, the approval effects and the outbox messages for the certificate listeners.
It commits before the answer leaves, so a crash never leaves a delivered certificate
unrecorded, a device with two valid certificates, or a superseded one off the CRL. A
refused request rolls all of that back and keeps only its step records.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal, NamedTuple, Protocol, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from imprint.attestation.base import (
    Attestation,
    AttestationFailed,
    Attestor,
    CertificateRevoked,
    Evidence,
    Hold,
    KeyMismatch,
    ReplayDetected,
    TooManyAttempts,
)
from imprint.attestation.renewal import Renewal, RenewalAuthorizer
from imprint.audit import AuditEntry, AuditLog
from imprint.clock import Clock, SystemClock
from imprint.errors import Conflict, ImprintError, InvalidRequest, NotFound, PermissionDenied
from imprint.pki.authority import (
    CertificateAuthority,
    IssuanceRequest,
    PreparedCertificate,
    ca_pems,
)
from imprint.pki.csr import IssuablePublicKey, check_public_key
from imprint.pki.keys import public_key_sha256
from imprint.pki.records import CertificateRecord, CertificateStatus
from imprint.provisioning.bundle import Bundle, ChannelGrant, response_mac, seal_for_device
from imprint.provisioning.channels import ChannelStore, KeyDelivery, channel_for_device
from imprint.provisioning.devices import (
    Device,
    DeviceStatus,
    DeviceStore,
    Nonce,
    NonceStore,
    ProvisioningStep,
    StepRecord,
    StepRecorder,
)
from imprint.provisioning.enrollments import Enrollment, Mechanism, ReprovisionPolicy
from imprint.provisioning.hooks import (
    Claims,
    EventSink,
    RegistrationFacts,
    RegistrationHook,
    Verdict,
)
from imprint.provisioning.hub import HubToken, HubTokenSource, HubTokenUnavailable
from imprint.provisioning.ratelimit import AttemptLimiter, Key, guessable_keys, refusal_keys
from imprint.provisioning.renewal import renew_after as renewal_due

__all__ = [
    "ChannelNotConfigured",
    "DeviceDisabled",
    "DeviceIdRejected",
    "EnrollmentClosed",
    "HookDenied",
    "KeyInUse",
    "KeyTypeNotAllowed",
    "Outcome",
    "PolicyDenied",
    "Provisioner",
    "QuotaExceeded",
    "key_type_of",
    "public_key_sha256",
]

APPROVAL_RETRY_SECONDS = 30


class _Grant(Protocol):
    """What an authorization names: the enrollment and the device in it."""

    @property
    def enrollment(self) -> Enrollment: ...

    @property
    def device_id(self) -> str: ...

    @property
    def nonce(self) -> Nonce | None: ...


_G = TypeVar("_G", bound=_Grant)


class PolicyDenied(PermissionDenied):
    code = "policy_denied"


class EnrollmentClosed(PolicyDenied):
    code = "enrollment_closed"


class KeyTypeNotAllowed(PolicyDenied):
    code = "key_type_not_allowed"


class DeviceIdRejected(PolicyDenied):
    code = "device_id_rejected"


class QuotaExceeded(PolicyDenied):
    code = "quota_exceeded"


class DeviceDisabled(PolicyDenied):
    code = "device_disabled"


class ReprovisionRefused(PolicyDenied):
    code = "reprovision_refused"


class KeyInUse(PolicyDenied):
    """The CSR's key is certified (or awaiting approval) for another device."""

    code = "key_in_use"


class ChannelNotConfigured(PolicyDenied):
    code = "channel_not_configured"


class HookDenied(PolicyDenied):
    """The organization's provisioning hook refused the registration."""

    code = "hook_denied"


class UnsupportedMechanism(InvalidRequest):
    code = "mechanism_unsupported"


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Literal["approved", "pending"]
    request_id: str
    device_id: str
    bundle: Bundle | None = None
    retry_after: int | None = None
    device_ref: str | None = None


def key_type_of(public_key: object) -> str:
    """The enrollment key-type name of a public key, e.g. ``ec-p256`` or ``rsa-3072``."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "ec-p256", "secp384r1": "ec-p384"}.get(public_key.curve.name, "ec")
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"rsa-{public_key.key_size}"
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "ed25519"
    return "unknown"


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


class Provisioner:
    """Runs a provisioning request from evidence to bundle."""

    def __init__(
        self,
        *,
        authority: CertificateAuthority,
        devices: DeviceStore,
        recorder: StepRecorder,
        nonces: NonceStore,
        attestors: Mapping[Mechanism, Attestor],
        limiter: AttemptLimiter | None = None,
        services: Mapping[str, str] | None = None,
        channels: ChannelStore | None = None,
        transaction: Callable[[], AbstractContextManager[object]] | None = None,
        renewals: RenewalAuthorizer | None = None,
        hub_tokens: HubTokenSource | None = None,
        audit: AuditLog | None = None,
        clock: Clock | None = None,
        hooks: RegistrationHook | None = None,
        events: EventSink | None = None,
    ) -> None:
        self._authority = authority
        self._hooks = hooks
        self._events = events
        self._transaction = transaction or contextlib.nullcontext
        self._channels = channels
        self._devices = devices
        self._recorder = recorder
        self._nonces = nonces
        self._attestors = dict(attestors)
        self._services = dict(services or {})
        self._renewals = renewals
        self._hub_tokens = hub_tokens
        self._audit_log = audit
        self._clock = clock or SystemClock()
        self._limiter = limiter if limiter is not None else AttemptLimiter(self._clock.now)

    @property
    def mechanisms(self) -> list[str]:
        """What devices may use: the attestation mechanisms, and renewal."""
        names = {m.value for m in self._attestors}
        if self._renewals is not None:
            names.add(Mechanism.RENEWAL.value)
        return sorted(names)

    def provision(self, evidence: Evidence) -> Outcome:
        """Attest, apply policy, issue and record.

        Raises:
            TooManyAttempts: this source or identity failed too often recently.
            AttestationFailed: the evidence does not prove an enrolled identity.
            PolicyDenied: the enrollment's policy refuses the request.
            InvalidRequest: the request is malformed (bad CSR, missing evidence).
        """
        attestor = self._attestors.get(evidence.mechanism)

        def attest(evidence: Evidence) -> Attestation:
            if attestor is None:
                raise UnsupportedMechanism(
                    f"mechanism {evidence.mechanism.value!r} is not enabled on this server"
                )
            return attestor.attest(evidence)

        def decide(evidence: Evidence, attestation: Attestation, step: _Steps) -> Outcome:
            outcome = self._after_attestation(evidence, attestation, step)
            if outcome.status == "approved":
                for effect in attestation.on_approved:
                    effect(evidence.at)
            return outcome

        guessable = attestor is not None and attestor.guessable
        outcome, _attestation = self._run(evidence, attest, decide, guessable)
        return outcome

    def renew(self, evidence: Evidence) -> Outcome:
        """Renew the certificate the device presents: authorize the renewal, apply the
        enrollment's policy (but not approval, quota or the re-provisioning policy: the
        device proved it holds its current certificate), issue and record.

        Raises:
            TooManyAttempts, AttestationFailed, PolicyDenied, InvalidRequest: as
                :meth:`provision`.
        """
        if self._renewals is None:
            raise UnsupportedMechanism("renewal is not enabled on this server")
        outcome, _renewal = self._run(evidence, self._renewals.authorize_renew, self._after_renewal)
        return outcome

    def _run(
        self,
        evidence: Evidence,
        authorize: Callable[[Evidence], _G],
        decide: Callable[[Evidence, _G, _Steps], Outcome],
        guessable: bool = False,
    ) -> tuple[Outcome, _G]:
        """The steps every request takes: authorization under the failed-attempt limits,
        then ``decide`` in one unit of work with the signed request's nonce and the step
        records: one commit. A refusal rolls back all but the records and the nonce,
        which the journal's unit writes again: a request that got an answer has spent
        its nonce, unless its evidence was refused.

        The nonce is spent where :meth:`_locked_device` says (with the device's lock,
        or alone before a network call), else at the end of the unit."""
        step = _Steps(uuid.uuid4().hex, evidence, self._clock)
        grant = self._authorized(evidence, authorize, step, guessable)
        nonce = step.nonce = grant.nonce
        try:
            with self._transaction():
                step.ok(ProvisioningStep.ATTEST, grant)
                outcome = decide(evidence, grant, step)
                self._spend_nonce(step)
                self._recorder.record(step.finished())
                self._keep_audit(step)
        except ImprintError as exc:
            if isinstance(exc, AttestationFailed):  # a replay, or a device check refused
                retry = self._limiter.refused(self._limit_keys(evidence, guessable))
                if retry is not None and not guessable:  # as _authorized answers it
                    if step.kept:  # a hook's verdict is audited even when refused
                        with self._transaction():
                            self._keep_audit(step)
                    raise TooManyAttempts(
                        "too many failed attempts; try again later", retry_after=retry
                    ) from None
            step.failed(step.current, exc)
            # Refused evidence (a pinned identity, a spent secret, found on the device)
            # spends no nonce, as where the attestor refuses it; any other refusal
            # does: a replay must not get a second look at the device.
            spent = None if step.evidence_refused else nonce
            self._journal_failure(step, exc, spent)
            raise
        except Exception:
            if nonce is not None:  # an error for an answer: the nonce is spent anyway
                with contextlib.suppress(Exception), self._transaction():
                    self._spend(nonce)  # the database may be what failed: best effort
            raise
        return outcome, grant

    def _spend(self, nonce: Nonce) -> bool:
        """Spend ``nonce`` in the active unit of work; False when it was spent before."""
        return self._nonces.use(nonce.scope, nonce.value, nonce.expires_at)

    def _spend_nonce(
        self, step: _Steps, *, alone: bool = False, lock_device: tuple[str, str] | None = None
    ) -> None:
        """Spend the request's nonce, if it has one not spent yet: in the unit of work,
        or ``alone`` (committed at once, so no transaction waits for the network call
        that comes next). ``lock_device`` (owner, device id): then lock that device
        (with the nonce, in one statement where the store can).

        Raises:
            ReplayDetected: it was spent before.
        """
        nonce = step.nonce
        if nonce is None or step.nonce_spent:
            if lock_device is not None:
                self._devices.lock(*lock_device)
            return
        step.nonce_spent = True
        spent = self._nonces.use(
            nonce.scope, nonce.value, nonce.expires_at, alone=alone, lock_device=lock_device
        )
        if not spent:
            step.current = ProvisioningStep.ATTEST
            raise ReplayDetected(nonce.replayed)

    def _journal_failure(
        self, step: _Steps, error: ImprintError, nonce: Nonce | None = None
    ) -> None:
        """Record a refused request in the provisioning journal, in one unit of work with
        what must outlive the refusal: the signed request's nonce (spent, if a replay
        had not spent it already), the audit of a hook's denial, and the
        ``provisioning.failed`` event when the request had named an enrollment (a
        request that proved nothing names no organization to tell)."""
        with self._transaction():
            if nonce is not None:
                self._spend(nonce)
            self._recorder.record(step.finished())
            self._keep_audit(step)
            if self._events is not None and step.owner is not None:
                self._events.emit(
                    "provisioning.failed",
                    step.owner,
                    {
                        "request_id": step.request_id,
                        "enrollment_id": step.enrollment_id,
                        "device_id": step.device_id,
                        "device_ref": step.device_ref,
                        "mechanism": step.evidence.mechanism.value,
                        "step": step.current.value,
                        "code": error.code,
                        "detail": error.message[:500],
                        "source": step.evidence.source,
                    },
                )

    def _keep_audit(self, step: _Steps) -> None:
        if self._audit_log is not None:
            for entry in step.kept:
                self._audit_log.write(entry)

    def _authorized(
        self,
        evidence: Evidence,
        authorize: Callable[[Evidence], _G],
        step: _Steps,
        guessable: bool,
    ) -> _G:
        """Authorize the evidence under the failed-attempt limits (decision 0011).

        Guessable evidence reserves its place in the counters of its source and claimed
        identity before it is verified. Unguessable evidence is verified first, so the
        right evidence always passes; a refusal counts against its source, and one from
        a source over the limit is answered 429 without a step record.
        """
        if guessable:
            return self._guess_checked(evidence, authorize, step)
        try:
            return authorize(evidence)
        except (AttestationFailed, InvalidRequest) as exc:
            retry = self._limiter.refused(refusal_keys(evidence.source))
            if retry is not None:
                raise TooManyAttempts(
                    "too many failed attempts; try again later", retry_after=retry
                ) from None
            step.failed(ProvisioningStep.ATTEST, exc)
            self._journal_failure(step, exc)
            raise

    @staticmethod
    def _limit_keys(evidence: Evidence, guessable: bool) -> tuple[Key, ...]:
        if not guessable:
            return refusal_keys(evidence.source)
        claim = evidence.registration_id
        return guessable_keys(
            None if claim is None else f"{evidence.mechanism.value}:{claim[:200]}",
            evidence.source,
        )

    def _guess_checked(
        self, evidence: Evidence, authorize: Callable[[Evidence], _G], step: _Steps
    ) -> _G:
        with self._limiter.attempt(self._limit_keys(evidence, True)) as attempt:
            try:
                grant = authorize(evidence)
            except (AttestationFailed, InvalidRequest) as exc:
                attempt.failed()
                step.failed(ProvisioningStep.ATTEST, exc)
                self._journal_failure(step, exc)
                raise
        return grant

    def _locked_device(
        self,
        evidence: Evidence,
        attestation: Attestation,
        step: _Steps,
        *,
        consult_hook: bool = False,
        may_await_approval: bool = False,
    ) -> _Locked:
        """Apply the enrollment's policy to the request, ask the provisioning hook (a
        registration, not a renewal), get the hub token (the network, never while
        holding a lock), prepare the certificate (unless the request may wait for an
        administrator's approval), then lock the device: from here on this request is
        the only one deciding about it."""
        step.current = ProvisioningStep.POLICY
        enrollment, device_id = attestation.enrollment, attestation.device_id
        # No CSR: a device without a key pair that collects only its credentials.
        public_key = None if evidence.csr is None else check_public_key(evidence.csr.public_key())
        self._check_policy(enrollment, device_id, public_key, evidence.at)
        hooked = consult_hook and self._hooks is not None and self._hooks.applies(enrollment.owner)
        if hooked or (enrollment.hub is not None and enrollment.hub.token_url is not None):
            # Refused before the network call: a replay (the spent nonce commits on its
            # own, so no lock or transaction is held while the provider answers), and
            # what the device as it is now refuses (checked again under the lock).
            if attestation.device_checks:
                self._check_device(
                    step, attestation, self._devices.find(enrollment.owner, device_id)
                )
            self._spend_nonce(step, alone=True)
        claims = Claims()
        if hooked:
            claims = self._consult_hook(evidence, attestation, public_key, step)
        hub_token = self._hub_token(attestation, step)
        # The certificate's names, validity and extensions are made now, before the
        # device's lock: on SQLite the lock begins the commit group's write phase, which
        # the other workers' writes wait for. Signed under the lock, once decided; a
        # refusal is kept for then too, so the device's checks still come first.
        prepared: PreparedCertificate | ImprintError | None = None
        if public_key is not None and not (may_await_approval and enrollment.manual_approval):
            try:
                prepared = self._authority.prepare(
                    self._issuance(attestation, public_key, device_ref=None)
                )
            except ImprintError as refused:
                prepared = refused
        step.current = ProvisioningStep.POLICY
        self._spend_nonce(step, lock_device=(enrollment.owner, device_id))
        key_hash = None if public_key is None else public_key_sha256(public_key)
        holder = None
        if key_hash is None:
            device = self._devices.find(enrollment.owner, device_id)
        else:
            device, holder = self._devices.find_with_holder(enrollment.owner, device_id, key_hash)
        step.device_ref = device.id if device else None
        if device is not None and device.status is DeviceStatus.DISABLED:
            raise DeviceDisabled(f"device {device_id!r} is disabled")
        self._check_device(step, attestation, device)
        if holder is not None:
            # One key, one device: a key another device holds (or waits to have
            # certified) is refused, whichever organization that device belongs to.
            raise KeyInUse("this public key is already certified for another device")
        return _Locked(device, key_hash, hub_token, claims, prepared)

    @staticmethod
    def _check_device(step: _Steps, attestation: Attestation, device: Device | None) -> None:
        """The attestor's checks of the device as it is (a pinned identity, a spent
        secret): a refusal there is of the evidence, at the attestation step, and spends
        no nonce, as when the attestor itself refuses."""
        current = step.current
        step.current = ProvisioningStep.ATTEST
        try:
            for check in attestation.device_checks:
                check(device)
        except AttestationFailed:
            step.evidence_refused = True
            raise
        step.current = current

    def _consult_hook(
        self, evidence: Evidence, attestation: Attestation, public_key: object | None, step: _Steps
    ) -> Claims:
        """The owner organization's provisioning hook: its verdict is journaled and
        audited (kept even when the request is refused); a denial refuses the request
        before anything is saved or signed.

        Raises:
            HookDenied: the hook said no (or failed, and its configuration says deny).
        """
        if self._hooks is None:
            return Claims()
        step.current = ProvisioningStep.HOOK
        enrollment = attestation.enrollment
        facts = RegistrationFacts(
            request_id=step.request_id,
            owner=enrollment.owner,
            enrollment_id=enrollment.id,
            device_id=attestation.device_id,
            mechanism=evidence.mechanism.value,
            identity=attestation.identity[:200],
            key_type=None if public_key is None else key_type_of(public_key),
            source=evidence.source,
            at=evidence.at,
        )
        verdict = self._hooks.consult(facts)
        if verdict is None:
            step.current = ProvisioningStep.POLICY
            return Claims()
        step.kept.append(self._hook_audit(attestation, step, verdict))
        if not verdict.allowed:
            raise HookDenied(verdict.reason or "refused by the organization's provisioning hook")
        detail = "allowed" if verdict.failure is None else f"allowed: {verdict.failure}"
        if verdict.claims:
            detail += f"; claims {', '.join(sorted(_claim_names(verdict.claims)))}"
        step.ok(ProvisioningStep.HOOK, attestation, detail=detail[:500])
        step.current = ProvisioningStep.POLICY
        return verdict.claims

    def _hook_audit(self, attestation: Attestation, step: _Steps, verdict: Verdict) -> AuditEntry:
        return AuditEntry(
            actor=f"device:{attestation.device_id}",
            action="device.hook",
            target_type="enrollment",
            target_id=attestation.enrollment.id,
            org_id=attestation.enrollment.owner,
            outcome="success" if verdict.allowed else "denied",
            details={
                "identity": attestation.identity,
                "request_id": step.request_id,
                "decision": "allow" if verdict.allowed else "deny",
                "reason": verdict.reason,
                "failure": verdict.failure,
                "claims": sorted(_claim_names(verdict.claims)),
            },
        )

    def _after_attestation(
        self, evidence: Evidence, attestation: Attestation, step: _Steps
    ) -> Outcome:
        enrollment = attestation.enrollment
        device_id = attestation.device_id
        step.current = ProvisioningStep.ATTEST
        for check in attestation.checks:
            held = check(evidence)
            if isinstance(held, Hold):
                step.pending(ProvisioningStep.ATTEST, held.reason)
                return Outcome(
                    "pending", step.request_id, device_id, retry_after=APPROVAL_RETRY_SECONDS
                )
        now = evidence.at
        device, key_hash, hub_token, claims, prepared = self._locked_device(
            evidence, attestation, step, consult_hook=True, may_await_approval=True
        )
        reused = self._current_bundle(device, key_hash, attestation, now, hub_token)
        if reused is not None:
            step.ok(ProvisioningStep.POLICY, attestation, detail="retry of a completed request")
            return Outcome(
                "approved", step.request_id, device_id, reused, device_ref=step.device_ref
            )
        if (
            device is not None
            and device.status is DeviceStatus.PROVISIONED
            and enrollment.reprovision is ReprovisionPolicy.RESET_REQUIRED
        ):
            raise ReprovisionRefused(
                f"device {device_id!r} is provisioned; a factory reset must come first"
            )
        is_new = device is None or device.status is DeviceStatus.RESET
        if (
            is_new
            and enrollment.quota is not None
            and self._devices.count_in_enrollment(enrollment.id) >= enrollment.quota
        ):
            raise QuotaExceeded(f"enrollment {enrollment.id!r} has reached its quota")
        if enrollment.manual_approval:
            waiting = self._await_approval(device, enrollment, attestation, key_hash, now)
            if waiting is not None:
                self._audit(
                    "device.await_approval",
                    attestation,
                    waiting.id,
                    request_id=step.request_id,
                    mechanism=evidence.mechanism.value,
                )
                step.device_ref = waiting.id
                self._emit(
                    "device.awaiting_approval",
                    enrollment.owner,
                    {
                        "request_id": step.request_id,
                        "device_ref": waiting.id,
                        "device_id": device_id,
                        "enrollment_id": enrollment.id,
                        "mechanism": evidence.mechanism.value,
                    },
                )
                step.pending(ProvisioningStep.POLICY, "waiting for an administrator's approval")
                return Outcome(
                    "pending",
                    step.request_id,
                    device_id,
                    retry_after=APPROVAL_RETRY_SECONDS,
                    device_ref=waiting.id,
                )
        step.ok(ProvisioningStep.POLICY, attestation)

        return self._issue(
            evidence, attestation, device, key_hash, hub_token, step, claims, prepared
        )

    def _after_renewal(self, evidence: Evidence, renewal: Renewal, step: _Steps) -> Outcome:
        attestation = Attestation(renewal.enrollment, renewal.device_id, renewal.identity)
        device, key_hash, hub_token, _claims, prepared = self._locked_device(
            evidence, attestation, step
        )
        if device is None or device.status is not DeviceStatus.PROVISIONED:
            raise DeviceDisabled(f"device {renewal.device_id!r} cannot renew")
        if renewal.presented_serial != device.certificate_serial:
            # The certificate a renewal superseded: presented again by a device that never
            # received that renewal's answer, or by a request that waited for the device
            # while a concurrent renewal won. The key that renewal certified gets its
            # answer again, any other key nothing.
            reused = self._current_bundle(device, key_hash, attestation, evidence.at, hub_token)
            if reused is None:
                raise CertificateRevoked("the certificate was superseded and can't renew again")
            step.ok(ProvisioningStep.POLICY, attestation, detail="retry of a completed renewal")
            return Outcome(
                "approved", step.request_id, device.device_id, reused, device_ref=device.id
            )
        step.ok(ProvisioningStep.POLICY, attestation, detail="renewal")
        return self._issue(
            evidence, attestation, device, key_hash, hub_token, step, prepared=prepared
        )

    @staticmethod
    def _issuance(
        attestation: Attestation, public_key: IssuablePublicKey, device_ref: str | None
    ) -> IssuanceRequest:
        """What a registration or renewal asks the CA for."""
        enrollment = attestation.enrollment
        return IssuanceRequest(
            public_key=public_key,
            profile=enrollment.profile,
            common_name=attestation.device_id,
            organizational_unit=enrollment.owner,
            validity=timedelta(days=enrollment.validity_days) if enrollment.validity_days else None,
            requested_by=attestation.identity[:200],  # "<mechanism>:<who>"
            owner=enrollment.owner,
            device_ref=device_ref,
        )

    def _issue(
        self,
        evidence: Evidence,
        attestation: Attestation,
        device: Device | None,
        key_hash: str | None,
        hub_token: HubToken | None,
        step: _Steps,
        claims: Claims | None = None,
        prepared: PreparedCertificate | ImprintError | None = None,
    ) -> Outcome:
        enrollment = attestation.enrollment
        device_id = attestation.device_id
        now = evidence.at
        claims = claims or Claims()
        step.current = ProvisioningStep.ISSUE
        device_ref = device.id if device else str(uuid.uuid4())
        previous = device.certificate_serial if device else None
        certificate, serial = None, previous
        if evidence.csr is None:
            step.ok(ProvisioningStep.ISSUE, attestation, detail="no key pair: no certificate")
        else:
            if isinstance(prepared, ImprintError):  # refused when prepared (see there)
                raise prepared
            if prepared is None:  # approved by an administrator: prepared only now
                public_key = check_public_key(evidence.csr.public_key())
                prepared = self._authority.prepare(
                    self._issuance(attestation, public_key, device_ref)
                )
            issued = self._authority.sign(prepared, device_ref)
            certificate, serial = issued.certificate, issued.record.serial
            if device is not None:  # a new device's fresh id holds no other certificate
                self._supersede(device_ref, previous, keep=serial, at=now)
            step.ok(ProvisioningStep.ISSUE, attestation, detail=f"serial {serial}")
        saved = Device(
            id=device_ref,
            owner=enrollment.owner,
            device_id=device_id,
            enrollment_id=enrollment.id,
            mechanism=enrollment.mechanism.value,
            status=DeviceStatus.PROVISIONED,
            created_at=device.created_at if device else now,
            updated_at=now,
            certificate_serial=serial,
            pinned_fingerprint=attestation.pinned_fingerprint
            or (device.pinned_fingerprint if device else None),
            public_key_sha256=key_hash,
            provisioned_at=now,
        )
        self._devices.save(saved)
        if claims and self._hooks is not None:
            self._hooks.remember(saved.id, enrollment.owner, claims, now)
        step.device_ref = saved.id
        step.current = ProvisioningStep.BUNDLE
        bundle = self._bundle(
            enrollment, attestation, certificate, saved.id, now, hub_token, claims.services
        )
        step.ok(ProvisioningStep.BUNDLE, attestation)
        renewal = evidence.mechanism is Mechanism.RENEWAL
        self._audit(
            "device.renew" if renewal else "device.provision",
            attestation,
            saved.id,
            request_id=step.request_id,
            mechanism=evidence.mechanism.value,
            serial=serial,
            superseded=previous if previous != serial else None,
            **({"claims": dict(claims.attributes)} if claims.attributes else {}),
        )
        self._emit(
            "provisioning.succeeded",
            enrollment.owner,
            {
                "request_id": step.request_id,
                "device_ref": saved.id,
                "device_id": device_id,
                "enrollment_id": enrollment.id,
                "mechanism": evidence.mechanism.value,
                "renewal": renewal,
                "serial": serial,
                "not_after": None
                if certificate is None
                else certificate.not_valid_after_utc.isoformat(),
                "superseded": previous if previous != serial else None,
                "attributes": dict(claims.attributes),
            },
        )
        return Outcome("approved", step.request_id, device_id, bundle, device_ref=saved.id)

    def _emit(self, event_type: str, org_id: str, data: Mapping[str, object]) -> None:
        """Queue a webhook event in the request's unit of work."""
        if self._events is not None:
            self._events.emit(event_type, org_id, data)

    def _audit(
        self, action: str, attestation: Attestation, device_ref: str, **details: object
    ) -> None:
        """The audit entry of a request that changed something, in its transaction: the
        actor is the device (``device:<device id>``), ``identity`` what vouched for it."""
        if self._audit_log is None:
            return
        self._audit_log.write(
            AuditEntry(
                actor=f"device:{attestation.device_id}",
                action=action,
                target_type="device",
                target_id=device_ref,
                org_id=attestation.enrollment.owner,
                details={"identity": attestation.identity, **details},
            )
        )

    def _check_policy(
        self, enrollment: Enrollment, device_id: str, public_key: object | None, now: datetime
    ) -> None:
        if not enrollment.is_open(now):
            raise EnrollmentClosed(
                f"enrollment {enrollment.id!r} is disabled or outside its window"
            )
        if public_key is None:
            if enrollment.channel is None:
                raise ChannelNotConfigured(
                    f"enrollment {enrollment.id!r} gives devices no channel, and a device "
                    "without a key pair has nothing else to collect: add a channel with "
                    f"PATCH /api/v1/enrollments/{enrollment.id} "
                    '{"channel": {"fields": {"field1": "temperature"}}} (or `imprint '
                    f"enrollment update {enrollment.id} --channel-field field1=temperature`), "
                    "or send a CSR to /api/v1/provision"
                )
            key_type = None
        else:
            key_type = key_type_of(public_key)
        if key_type is not None and key_type not in enrollment.key_types:
            raise KeyTypeNotAllowed(
                f"key type {key_type} is not allowed; use one of {', '.join(enrollment.key_types)}"
            )
        pattern = enrollment.device_id_pattern
        if pattern is not None and not re.fullmatch(pattern, device_id):
            raise DeviceIdRejected(
                f"device id {device_id!r} does not match the enrollment's pattern"
            )

    def _await_approval(
        self,
        device: Device | None,
        enrollment: Enrollment,
        attestation: Attestation,
        key_hash: str | None,
        now: datetime,
    ) -> Device | None:
        """The pending device when approval is still needed, else None."""
        if device is not None and device.status is DeviceStatus.APPROVED:
            if device.public_key_sha256 != key_hash:
                raise KeyMismatch("the approved request was made with another key")
            return None
        if device is not None and device.status is DeviceStatus.PROVISIONED:
            return None  # approved once; re-provisioning needs no new approval
        pending = Device(
            id=device.id if device else str(uuid.uuid4()),
            owner=enrollment.owner,
            device_id=attestation.device_id,
            enrollment_id=enrollment.id,
            mechanism=enrollment.mechanism.value,
            status=DeviceStatus.PENDING,
            created_at=device.created_at if device else now,
            updated_at=now,
            certificate_serial=device.certificate_serial if device else None,
            pinned_fingerprint=attestation.pinned_fingerprint,
            public_key_sha256=key_hash,
        )
        self._devices.save(pending)
        return pending

    def _hub_token(self, attestation: Attestation, step: _Steps) -> HubToken | None:
        """A fresh hub token when the enrollment names a provider. Fetched before anything
        is issued or saved, so a refusal leaves no state behind."""
        enrollment = attestation.enrollment
        if enrollment.hub is None:
            return None
        step.current = ProvisioningStep.HUB_TOKEN
        if self._hub_tokens is None:
            raise HubTokenUnavailable("this server has no OAuth side to get hub tokens from")
        token = self._hub_tokens.token_for(enrollment.hub, enrollment.owner)
        step.ok(ProvisioningStep.HUB_TOKEN, attestation, detail=f"from {enrollment.hub.name}")
        return token

    def _current_bundle(
        self,
        device: Device | None,
        key_hash: str | None,
        attestation: Attestation,
        now: datetime,
        hub_token: HubToken | None,
    ) -> Bundle | None:
        """A retry with the same key gets the certificate already issued, not a new one
        (with a fresh hub token); a device without a key pair gets its credentials again."""
        if device is None or device.status is not DeviceStatus.PROVISIONED:
            return None
        if key_hash is None:
            enrollment = attestation.enrollment
            return self._bundle(enrollment, attestation, None, device.id, now, hub_token)
        if device.public_key_sha256 != key_hash or device.certificate_serial is None:
            return None
        record = self._authority_ledger_get(device.certificate_serial)
        if record is None or record.status is not CertificateStatus.ISSUED or record.der is None:
            return None
        if record.not_after <= now:
            return None
        certificate = x509.load_der_x509_certificate(record.der)
        return self._bundle(
            attestation.enrollment, attestation, certificate, device.id, now, hub_token
        )

    def _authority_ledger_get(self, serial: str) -> CertificateRecord | None:
        try:
            return self._authority.ledger.get(serial)
        except NotFound:
            return None

    def _supersede(self, device_ref: str, previous: str | None, *, keep: str, at: datetime) -> None:
        """Revoke, in this transaction, every certificate the device still holds but the
        new one: its previous certificate and any other ever issued to it."""
        serials = {r.serial for r in self._authority.ledger.valid_for_device(device_ref, at)}
        if previous is not None:
            serials.add(previous)
        for serial in sorted(serials - {keep}):
            # Already revoked, or never issued: then there is nothing left to supersede.
            with contextlib.suppress(Conflict, NotFound):
                self._authority.revoke(serial, x509.ReasonFlags.superseded)

    def _channel(
        self, enrollment: Enrollment, device_id: str, device_ref: str, at: datetime
    ) -> ChannelGrant | None:
        """The device's channel, made the first time (kept across re-provisioning)."""
        if enrollment.channel is None or self._channels is None:
            return None
        channel = channel_for_device(
            self._channels,
            enrollment.channel,
            owner=enrollment.owner,
            enrollment_id=enrollment.id,
            device_ref=device_ref,
            device_id=device_id,
            at=at,
        )
        return ChannelGrant(channel.id, channel.write_key.key)

    def _bundle(
        self,
        enrollment: Enrollment,
        attestation: Attestation,
        certificate: x509.Certificate | None,
        device_ref: str,
        at: datetime,
        hub_token: HubToken | None = None,
        added_services: Mapping[str, str] | None = None,
    ) -> Bundle:
        chain = self._authority.chain
        tokens: dict[str, dict[str, str]] = {}
        if hub_token is not None:
            tokens["hub"] = hub_token.as_bundle()
        services = {**self._services, **enrollment.services, **(added_services or {})}
        psk = enrollment.pre_shared_key
        grant = self._channel(enrollment, attestation.device_id, device_ref, at)
        sealed = mac = chain_pem = leaf_pem = None
        if certificate is not None:
            leaf_pem = _pem(certificate)
            chain_pem = leaf_pem + "".join(ca_pems(chain[:-1]))
        if attestation.response_key is not None:
            if chain_pem is not None:
                mac = response_mac(attestation.response_key, attestation.device_id, chain_pem)
            secrets: dict[str, object] = {}
            if psk is not None:
                secrets["pre_shared_key"], psk = psk, None
            if tokens:
                secrets["tokens"], tokens = tokens, {}
            channel = enrollment.channel
            if grant is not None and channel is not None and channel.delivery is KeyDelivery.SEALED:
                secrets["channel"] = {"id": grant.id, "write_key": grant.write_key}
                grant = ChannelGrant(grant.id)  # the id stays readable, the key does not
            if secrets:
                sealed = seal_for_device(attestation.response_key, attestation.device_id, secrets)
        not_after = renew_after = None
        if certificate is not None:
            not_after = certificate.not_valid_after_utc
            renew_after = renewal_due(certificate.not_valid_before_utc, not_after)
        return Bundle(
            device_id=attestation.device_id,
            owner=enrollment.owner,
            enrollment_id=enrollment.id,
            serial=None if certificate is None else format(certificate.serial_number, "x"),
            certificate_pem=leaf_pem,
            chain_pem=chain_pem,
            trust_anchors_pem=ca_pems(self._authority.trust_anchors),
            not_after=not_after,
            renew_after=renew_after,
            services=services,
            pre_shared_key=psk,
            tokens=tokens,
            sealed=sealed,
            response_mac=mac,
            channel=grant,
        )


class _Locked(NamedTuple):
    device: Device | None  # as it is now that the request holds its lock
    key_hash: str | None  # the requested key's SHA-256 (None without a CSR)
    hub_token: HubToken | None
    claims: Claims  # what the provisioning hook added (none without a hook)
    # The certificate made ready before the lock, or why it could not be (None without
    # a CSR, or for a registration that may wait for an administrator's approval):
    # signed, or the refusal raised, under the lock once the device's checks passed.
    prepared: PreparedCertificate | ImprintError | None


def _claim_names(claims: Claims) -> list[str]:
    return [f"attributes.{k}" for k in claims.attributes] + [
        f"services.{k}" for k in claims.services
    ]


class _Steps:
    """Collects the step records of one request."""

    def __init__(self, request_id: str, evidence: Evidence, clock: Clock) -> None:
        self.request_id = request_id
        self.evidence = evidence
        self.clock = clock
        self.records: list[StepRecord] = []
        self.current = ProvisioningStep.ATTEST
        self.device_ref: str | None = None
        self.enrollment_id: str | None = None
        self.owner: str | None = None  # the enrollment's organization, once named
        self.device_id: str | None = None
        self.kept: list[AuditEntry] = []  # audit entries kept even when refused
        self.nonce: Nonce | None = None  # the signed request's, spent once in the unit
        self.nonce_spent = False
        self.evidence_refused = False  # by the attestor's checks of the device

    def _add(
        self,
        step: ProvisioningStep,
        status: str,
        *,
        code: str | None = None,
        detail: str | None = None,
        registration_id: str | None = None,
    ) -> None:
        self.records.append(
            StepRecord(
                request_id=self.request_id,
                mechanism=self.evidence.mechanism.value,
                step=step,
                status=status,
                at=self.clock.now(),
                device_ref=self.device_ref,
                enrollment_id=self.enrollment_id,
                registration_id=registration_id or self.evidence.registration_id,
                code=code,
                detail=detail,
                source=self.evidence.source,
            )
        )

    def ok(self, step: ProvisioningStep, grant: _Grant, detail: str | None = None) -> None:
        self.enrollment_id = grant.enrollment.id
        self.owner = grant.enrollment.owner
        self.device_id = grant.device_id
        self._add(step, "ok", detail=detail, registration_id=grant.device_id)

    def finished(self) -> list[StepRecord]:
        """The records, each tied to the device once the request has found it."""
        if self.device_ref is None:
            return self.records
        return [
            r
            if r.device_ref
            else replace(r, device_ref=self.device_ref, enrollment_id=self.enrollment_id)
            for r in self.records
        ]

    def pending(self, step: ProvisioningStep, detail: str) -> None:
        self._add(step, "pending", detail=detail)

    def failed(self, step: ProvisioningStep, error: ImprintError) -> None:
        self._add(step, "failed", code=error.code, detail=error.message[:500])
