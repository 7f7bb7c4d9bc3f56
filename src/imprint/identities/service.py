"""What the routes of client identities use, wired once by the runtime."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from imprint.identities.identity import IdentityIssuer
from imprint.identities.psk import PskStore
from imprint.identities.relay import RelayStore
from imprint.provisioning.ratelimit import AttemptLimiter

__all__ = ["ClientIdentities"]


@dataclass(frozen=True)
class ClientIdentities:
    """Identity certificates, the browser relay and PSKs of client applications.

    Attributes:
        issuer: signs identity certificates (one key per owner at a time).
        relays: pending and decided relay requests.
        psks: the PSKs of each organization, keys sealed.
        relay_lifetime: how long a relay state lives (60 s by default).
        relay_limiter: relay requests per source address (the endpoint takes no
            credentials).
    """

    issuer: IdentityIssuer
    relays: RelayStore
    psks: PskStore
    relay_lifetime: timedelta
    relay_limiter: AttemptLimiter
