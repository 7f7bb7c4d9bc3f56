"""Browser relay operations: a client's CSR, approved or denied by a signed-in user.

The client starts a relay (no credentials: its CSR and a random state) and collects the
outcome with the state; a user decides in her browser. :meth:`RelayOperations.approve`
and :meth:`RelayOperations.deny` are the one way to decide: in one unit of work they
find the pending request, authorize (signing needs an operator of the user's owner),
act and write the audit entry, so a request decided meanwhile (another tab, its
expiry) leaves no certificate behind.

The client's own changes are audited too, each in the transaction that makes it:
``relay.start`` and ``relay.collect`` (a decided request handed out, and so deleted)
name the client by its key, ``relay:<first 16 hex digits of the key's SHA-256>``, as
device protocols name the device; ``relay.purge`` (expired requests deleted when a new
one starts) is the instance's own, ``system:expiry``. A collect that finds the request
still pending changes nothing and writes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from cryptography import x509

from imprint.app.base import Operations
from imprint.identities.identity import IdentityCertificate
from imprint.identities.relay import (
    MAX_STATE_LENGTH,
    RelayDecided,
    RelayExpired,
    RelayRequest,
    RelayStatus,
    RelayUnknown,
    new_relay,
    state_digest,
)
from imprint.tenancy.access import Principal

__all__ = ["EXPIRY_ACTOR", "Collected", "RelayOperations", "relay_actor"]

_STATE = re.compile(r"[A-Za-z0-9_-]{16,64}")
#: Expired requests are deleted this long after their expiry, when a new one starts.
PURGE_AFTER = timedelta(minutes=10)
#: The actor of the purge of expired requests: no principal asked for it.
EXPIRY_ACTOR = "system:expiry"


def relay_actor(relay: RelayRequest) -> str:
    """The audit actor of the client that started ``relay``: its public key."""
    return f"relay:{relay.spki_sha256[:16]}"


@dataclass(frozen=True, slots=True)
class Collected:
    """What the client collects: still pending (with the seconds left), denied, or its
    certificate (``identity``)."""

    status: RelayStatus
    seconds_left: int = 0
    identity: IdentityCertificate | None = None


class RelayOperations(Operations):
    def start(
        self, csr: x509.CertificateSigningRequest, source: str | None
    ) -> tuple[str, RelayRequest]:
        """Store a new relay request for ``csr``; its state (secret, told to the client
        only) and the request."""
        identities = self._rt.identities
        now = self._now()
        with self._transaction():
            purged = identities.relays.purge(now - PURGE_AFTER)
            if purged:
                self._audit(EXPIRY_ACTOR, "relay.purge", "relay", None, purged=purged)
            state, relay = new_relay(csr, at=now, lifetime=identities.relay_lifetime, source=source)
            identities.relays.add(relay)
            self._audit(
                relay_actor(relay),
                "relay.start",
                "relay",
                relay.spki_sha256,
                subject=relay.subject,
                source=source,
                expires_at=relay.expires_at.isoformat(),
            )
        return state, relay

    def find(self, state: str) -> RelayRequest:
        """The request named by ``state``, whatever its status.

        Raises:
            RelayUnknown: no such state (or it was collected).
            RelayExpired: its lifetime is over.
        """
        if len(state) > MAX_STATE_LENGTH or not _STATE.fullmatch(state):
            raise RelayUnknown("no relay request with this state")
        relay = self._rt.identities.relays.get(state_digest(state))
        if relay is None:
            raise RelayUnknown("no relay request with this state (unknown, or collected already)")
        if relay.expired(self._now()):
            raise RelayExpired("this relay request has expired; start a new one")
        return relay

    def pending(self, state: str) -> RelayRequest:
        """The request named by ``state``, still waiting for a decision.

        Raises:
            RelayUnknown, RelayExpired: as :meth:`find`.
            RelayDecided: it was approved or denied already.
        """
        relay = self.find(state)
        if relay.status is not RelayStatus.PENDING:
            raise RelayDecided(f"this request was {relay.status.value} already")
        return relay

    def seconds_left(self, relay: RelayRequest) -> int:
        """Whole seconds until ``relay`` expires (0 once it has)."""
        return max(0, int((relay.expires_at - self._now()).total_seconds()))

    def approve(self, principal: Principal, state: str) -> IdentityCertificate:
        """Sign the identity certificate of the principal's owner for the relayed CSR.

        Raises:
            RelayUnknown, RelayExpired, RelayDecided: not a pending request (any more).
            PermissionDenied, NotFound, IdentityKeyConflict: as
                :meth:`IdentityOperations.sign_identity`.
        """
        with self._transaction():
            relay = self.pending(state)
            identity = self._rt.app.identities.sign_identity(principal, relay.csr())
            self._decide(relay, RelayStatus.APPROVED, principal, identity)
            self._audit(
                principal,
                "relay.approve",
                "certificate",
                identity.serial,
                org_id=identity.owner,
                public_key_sha256=relay.spki_sha256,
            )
        return identity

    def deny(self, principal: Principal, state: str) -> RelayRequest:
        """Refuse the relayed CSR: the client collects a refusal.

        Raises:
            RelayUnknown, RelayExpired, RelayDecided: not a pending request (any more).
        """
        with self._transaction():
            relay = self.pending(state)
            self._decide(relay, RelayStatus.DENIED, principal, None)
            self._audit(principal, "relay.deny", "relay", relay.spki_sha256, org_id=principal.owner)
        return relay

    def _decide(
        self,
        relay: RelayRequest,
        status: RelayStatus,
        principal: Principal,
        identity: IdentityCertificate | None,
    ) -> None:
        decided = self._rt.identities.relays.decide(
            relay.state_sha256,
            status,
            owner=None if identity is None else identity.owner,
            serial=None if identity is None else identity.serial,
            decided_by=principal.actor,
            at=self._now(),
        )
        if not decided:
            raise RelayDecided("the request expired or was decided meanwhile")

    def collect(self, state: str) -> Collected:
        """The outcome for the client: pending, denied or approved. A decided request is
        handed out once; the state is then gone.

        Raises:
            RelayUnknown, RelayExpired: as :meth:`find`.
        """
        relay = self.find(state)
        if relay.status is RelayStatus.PENDING:
            return Collected(RelayStatus.PENDING, max(1, self.seconds_left(relay)))
        with self._transaction():
            taken = self._rt.identities.relays.take(relay.state_sha256)
            if taken is None:
                raise RelayUnknown(
                    "no relay request with this state (unknown, or collected already)"
                )
            if taken.status is RelayStatus.DENIED:
                self._audit(
                    relay_actor(taken),
                    "relay.collect",
                    "relay",
                    taken.spki_sha256,
                    status=taken.status.value,
                )
                return Collected(RelayStatus.DENIED)
            assert taken.serial is not None
            assert taken.owner is not None
            self._audit(
                relay_actor(taken),
                "relay.collect",
                "certificate",
                taken.serial,
                org_id=taken.owner,
                status=taken.status.value,
                public_key_sha256=taken.spki_sha256,
            )
        record = self._rt.ledger.get(taken.serial)
        assert record.der is not None
        authority = self._rt.authority
        identity = IdentityCertificate(
            owner=taken.owner,
            certificate=x509.load_der_x509_certificate(record.der),
            intermediates=authority.chain[:-1],
            trust_anchors=authority.trust_anchors,
            reused=False,
        )
        return Collected(RelayStatus.APPROVED, identity=identity)
