"""Client identities: identity certificates, the browser relay and PSKs.

::

    ImprintError
    ├── Conflict
    │   ├── IdentityKeyConflict   the owner's valid identity holds another key (409)
    │   ├── RelayDecided          the relay request was approved or denied already (409)
    │   └── PskSubjectTaken       the organization has a PSK with that subject (409)
    └── NotFound
        ├── RelayUnknown          no such state, or it was collected (404)
        └── RelayExpired          the state's lifetime is over (410)
"""

from __future__ import annotations

from imprint.identities.identity import (
    IdentityCertificate,
    IdentityIssuer,
    IdentityKeyConflict,
    IdentityStore,
    spki_sha256,
)
from imprint.identities.psk import ClientPsk, PskOrigin, PskStore, PskSubjectTaken, new_psk
from imprint.identities.relay import (
    RelayDecided,
    RelayExpired,
    RelayRequest,
    RelayStatus,
    RelayStore,
    RelayUnknown,
)
from imprint.identities.service import ClientIdentities

__all__ = [
    "ClientIdentities",
    "ClientPsk",
    "IdentityCertificate",
    "IdentityIssuer",
    "IdentityKeyConflict",
    "IdentityStore",
    "PskOrigin",
    "PskStore",
    "PskSubjectTaken",
    "RelayDecided",
    "RelayExpired",
    "RelayRequest",
    "RelayStatus",
    "RelayStore",
    "RelayUnknown",
    "new_psk",
    "spki_sha256",
]
