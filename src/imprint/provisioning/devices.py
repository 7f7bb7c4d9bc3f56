"""Devices as imprint knows them, and the per-step provisioning record."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

__all__ = [
    "Device",
    "DeviceStatus",
    "DeviceStore",
    "NonceStore",
    "ProvisioningStep",
    "StepRecord",
    "StepRecorder",
]


class DeviceStatus(StrEnum):
    PENDING = "pending"  # waiting for an administrator's approval
    APPROVED = "approved"  # approved, certificate not collected yet
    PROVISIONED = "provisioned"
    DISABLED = "disabled"
    RESET = "reset"  # factory reset: released, may provision again


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    owner: str
    device_id: str
    enrollment_id: str
    mechanism: str
    status: DeviceStatus
    created_at: datetime
    updated_at: datetime
    certificate_serial: str | None = None
    pinned_fingerprint: str | None = None
    public_key_sha256: str | None = None
    provisioned_at: datetime | None = None


class DeviceStore(Protocol):
    def lock(self, owner: str, device_id: str) -> None:
        """Make the caller's unit of work the only one deciding about this device (it may
        not exist yet) until it ends; wait while another holds it."""

    def find(self, owner: str, device_id: str) -> Device | None: ...
    def get(self, device_ref: str) -> Device: ...
    def save(self, device: Device) -> None:
        """Insert or update by ``id``; raise Conflict when (owner, device_id) is taken."""

    def count_in_enrollment(self, enrollment_id: str) -> int:
        """Devices holding or awaiting a certificate under this enrollment (not reset)."""

    def find_with_holder(
        self, owner: str, device_id: str, public_key_sha256: str
    ) -> tuple[Device | None, Device | None]:
        """The device (as :meth:`find`), and another device that holds, or waits to have
        certified, the key with that SHA-256 (provisioned, pending or approved; any
        organization), or None: one read."""

    def search(
        self,
        *,
        owner: str | None = None,
        enrollment_id: str | None = None,
        status: DeviceStatus | None = None,
        limit: int = 100,
        after: str | None = None,
        owners: Collection[str] | None = None,
    ) -> Sequence[Device]: ...


class ProvisioningStep(StrEnum):
    ATTEST = "attest"
    POLICY = "policy"
    # Before issue: a refused hub token leaves no certificate behind.
    HUB_TOKEN = "hub-token"  # noqa: S105 (a step name, not a secret)
    HOOK = "hook"  # the provisioning hook's verdict, before anything is signed
    ISSUE = "issue"
    BUNDLE = "bundle"


@dataclass(frozen=True, slots=True)
class StepRecord:
    request_id: str
    mechanism: str
    step: ProvisioningStep
    status: str  # ok | failed | pending
    at: datetime
    device_ref: str | None = None
    enrollment_id: str | None = None
    registration_id: str | None = None
    code: str | None = None
    detail: str | None = None
    source: str | None = None


class StepRecorder(Protocol):
    def record(self, steps: Sequence[StepRecord]) -> None:
        """Store the steps of one request in one transaction."""

    def for_device(self, device_ref: str, limit: int = 100) -> Sequence[StepRecord]: ...


@dataclass(frozen=True, slots=True)
class Nonce:
    """A signed request's nonce, to spend once the request is authorized.

    The attestor that checked the request names it; the use case spends it first in
    the request's unit of work (one commit with the rest), and again with the journal
    of a refusal, so a request that got an answer has spent its nonce either way, and
    one refused before (during attestation) has spent none. ``replayed`` is the
    refusal's message when the nonce was spent already.
    """

    scope: str
    value: str
    expires_at: datetime
    replayed: str = "this nonce was used before"


class NonceStore(Protocol):
    def use(
        self,
        scope: str,
        nonce: str,
        expires_at: datetime,
        *,
        alone: bool = False,
        lock_device: tuple[str, str] | None = None,
    ) -> bool:
        """Remember ``nonce``, in the caller's unit of work if there is one (``alone``:
        in a transaction of its own, committed at once); False when it was already
        used in ``scope``. ``lock_device`` (owner, device id): lock that device too, as
        :meth:`DeviceStore.lock` does (on PostgreSQL in the same statement), surely when
        this returns True; a replay may hold it until its unit rolls back."""
