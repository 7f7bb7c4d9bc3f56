"""The provisioning use case's outside parties: the provisioning hook, a policy check
asked before anything is signed, and the sink of the events a registration causes.

A hook answers a :class:`Verdict`: allow (optionally with :class:`Claims`, the only
things a hook may add: attributes recorded on the device and services put into its
bundle), or deny with a reason the device is told. Whether a hook that timed out or
failed allows or denies is its own configuration; the verdict says which it was.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from imprint.errors import InvalidValue

__all__ = [
    "Claims",
    "EventSink",
    "RegistrationFacts",
    "RegistrationHook",
    "Verdict",
    "parse_claims",
]

_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
_SERVICE = re.compile(r"[a-z][a-z0-9-]{0,31}")
MAX_CLAIMS = 32
MAX_VALUE = 500


@dataclass(frozen=True, slots=True)
class RegistrationFacts:
    """What the hook is told about a registration (no secret, no key material)."""

    request_id: str
    owner: str
    enrollment_id: str
    device_id: str
    mechanism: str
    identity: str
    key_type: str | None
    source: str | None
    at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "org_id": self.owner,
            "enrollment_id": self.enrollment_id,
            "device_id": self.device_id,
            "mechanism": self.mechanism,
            "identity": self.identity,
            "key_type": self.key_type,
            "source": self.source,
            "at": self.at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Claims:
    """What a hook may add to a registration."""

    attributes: Mapping[str, str] = field(default_factory=dict)
    services: Mapping[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.attributes or self.services)


@dataclass(frozen=True, slots=True)
class Verdict:
    """A hook's decision: ``allowed``, its ``reason`` (the device is told it on a
    denial), the ``claims`` it adds, and ``failure`` when the hook did not answer a
    decision (timed out, unreachable, a bad answer) and its configuration decided."""

    allowed: bool
    reason: str | None = None
    claims: Claims = field(default_factory=Claims)
    failure: str | None = None


def parse_claims(value: object) -> Claims:
    """The claims of a hook's answer, if they are only what a hook may add.

    Raises:
        InvalidValue: another key, a bad name, a non-string or too long value.
    """
    if value is None:
        return Claims()
    if not isinstance(value, dict):
        raise InvalidValue("claims: an object")
    unknown = sorted(set(value) - {"attributes", "services"})
    if unknown:
        raise InvalidValue(f"claims: {unknown[0]!r} may not be added (attributes, services)")
    attributes = _strings(value.get("attributes"), "attributes", _NAME)
    services = _strings(value.get("services"), "services", _SERVICE)
    return Claims(attributes, services)


def _strings(value: object, what: str, names: re.Pattern[str]) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_CLAIMS:
        raise InvalidValue(f"claims.{what}: an object of at most {MAX_CLAIMS} strings")
    for key, item in value.items():
        if not isinstance(key, str) or not names.fullmatch(key):
            raise InvalidValue(f"claims.{what}: {str(key)[:64]!r} is not an acceptable name")
        if not isinstance(item, str) or not item or len(item) > MAX_VALUE:
            raise InvalidValue(f"claims.{what}.{key}: a string of 1 to {MAX_VALUE} characters")
    return dict(value)


class RegistrationHook(Protocol):
    def applies(self, owner: str) -> bool:
        """Whether ``owner`` has an enabled hook (:meth:`consult` makes a network call)."""

    def consult(self, facts: RegistrationFacts) -> Verdict | None:
        """The verdict of the owner organization's hook; None when it has none."""

    def remember(self, device_ref: str, owner: str, claims: Claims, at: datetime) -> None:
        """Record the claims on the device, in the request's unit of work."""


class EventSink(Protocol):
    def emit(self, event_type: str, org_id: str, data: Mapping[str, Any]) -> None:
        """Queue the event for the organization's receivers, in the caller's unit of
        work (it commits with the change that caused it, or not at all)."""
