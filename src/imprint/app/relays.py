"""Browser relay operations: a client's CSR, approved or denied by a signed-in user.

The client starts a relay (no credentials: its CSR and a random state) and collects the
outcome with the state; a user decides in her browser. :meth:`RelayOperations.approve`
and :meth:`RelayOperations.deny` are the one way to decide: in one unit of work they
find the pending request, authorize (signing needs an operator of the user's owner),
act and write the audit entry, so a request decided meanwhile (another tab, its
expiry) leaves no certificate behind.
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

__all__ = ["Collected", "RelayOperations"]

_STATE = re.compile(r"[A-Za-z0-9_-]{16,64}")
#: Expired requests are deleted this long after their expiry, when a new one starts.
PURGE_AFTER = timedelta(minutes=10)


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
            identities.relays.purge(now - PURGE_AFTER)
            state, relay = new_relay(csr, at=now, lifetime=identities.relay_lifetime, source=source)
            identities.relays.add(relay)
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
        taken = self._rt.identities.relays.take(relay.state_sha256)
        if taken is None:
            raise RelayUnknown("no relay request with this state (unknown, or collected already)")
        if taken.status is RelayStatus.DENIED:
            return Collected(RelayStatus.DENIED)
        assert taken.serial is not None
        assert taken.owner is not None
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
