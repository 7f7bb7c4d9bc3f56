"""Which attestation mechanisms this server runs, each built with what it needs."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from imprint.attestation.base import Attestor
from imprint.provisioning.devices import DeviceStore, NonceStore
from imprint.provisioning.enrollments import EnrollmentStore, Mechanism
from imprint.sealing import SecretBox

__all__ = ["build_attestors"]


def build_attestors(
    *,
    engine: Engine,
    box: SecretBox,
    enrollments: EnrollmentStore,
    devices: DeviceStore,
    nonces: NonceStore,
) -> dict[Mechanism, Attestor]:
    """One attestor per mechanism (the engine is only for mechanism-specific stores)."""
    attestors: dict[Mechanism, Attestor] = {}
    return attestors
