"""Client identities on SQL: the key holding each owner's identity, relay requests, PSKs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection, Engine, RowMapping
from sqlalchemy.exc import IntegrityError

from imprint.errors import Conflict, NotFound
from imprint.identities.identity import (
    CLAIM_GRACE,
    CurrentIdentity,
    IdentityKeyConflict,
    renewal_due,
)
from imprint.identities.psk import ClientPsk, PskOrigin, PskSubjectTaken
from imprint.identities.relay import RelayRequest, RelayStatus
from imprint.pki.records import CertificateStatus
from imprint.sealing import SecretBox
from imprint.store.db import guarded, own_transaction, reading, writing
from imprint.store.tables import certificates, client_identities, client_psks, relay_requests

__all__ = ["SqlIdentityStore", "SqlPskStore", "SqlRelayStore"]


class SqlIdentityStore:
    """Implements :class:`imprint.identities.identity.IdentityStore`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def claim(
        self, owner: str, spki_sha256: str, requested_by: str, at: datetime, *, reuse: bool
    ) -> CurrentIdentity | None:
        table = client_identities
        for attempt in range(2):
            try:
                # Its own commit, never a caller's unit of work: like the certificate
                # ledger's reserve, the claim is seen by concurrent requests before
                # anything is signed (and the ledger's reserve, next, writes on its own).
                with own_transaction(self._engine) as conn:
                    # Lock the owner's row first (SQLite: take the write lock before
                    # reading), so concurrent claims for one owner take turns.
                    conn.execute(
                        update(table).where(table.c.owner == owner).values(owner=table.c.owner)
                    )
                    row = (
                        conn.execute(select(table).where(table.c.owner == owner)).mappings().first()
                    )
                    if row is not None:
                        found = self._decide(conn, row, spki_sha256, at, reuse=reuse)
                        if found is not None:
                            return found
                        conn.execute(delete(table).where(table.c.owner == owner))
                    conn.execute(
                        insert(table).values(
                            owner=owner,
                            spki_sha256=spki_sha256,
                            serial=None,
                            not_after=None,
                            claimed_at=at,
                            requested_by=requested_by[:200],
                        )
                    )
                    return None
            except IntegrityError:
                if attempt:  # a concurrent first claim won twice in a row: give up
                    raise Conflict(
                        f"the identity of owner {owner!r} is being changed; try again",
                        code="identity_busy",
                    ) from None
        raise AssertionError("unreachable")

    @staticmethod
    def _decide(
        conn: Connection, row: RowMapping, spki_sha256: str, at: datetime, *, reuse: bool
    ) -> CurrentIdentity | None:
        """The certificate to hand back, None to claim anew; raise on another key."""
        valid = None
        if row["serial"] is not None:
            valid = (
                conn.execute(
                    select(
                        certificates.c.serial,
                        certificates.c.der,
                        certificates.c.not_before,
                        certificates.c.not_after,
                    )
                    .where(certificates.c.serial == row["serial"])
                    .where(certificates.c.status == CertificateStatus.ISSUED.value)
                    .where(certificates.c.not_after > at)
                )
                .mappings()
                .first()
            )
        if row["spki_sha256"] != spki_sha256:
            claiming = row["serial"] is None and row["claimed_at"] > at - CLAIM_GRACE
            if valid is not None:
                raise IdentityKeyConflict(
                    f"owner {row['owner']!r} has a valid identity certificate (serial "
                    f"{valid['serial']}, until {valid['not_after'].isoformat()}) for another "
                    "key; revoke it to change the key"
                )
            if claiming:
                raise IdentityKeyConflict(
                    f"an identity certificate for owner {row['owner']!r} is being signed for "
                    "another key"
                )
            return None
        if (
            reuse
            and valid is not None
            and valid["der"] is not None
            and not renewal_due(valid["not_before"], valid["not_after"], at)
        ):
            return CurrentIdentity(serial=valid["serial"], der=valid["der"])
        return None

    def record(self, owner: str, spki_sha256: str, serial: str, not_after: datetime) -> None:
        table = client_identities
        with writing(self._engine) as conn:
            conn.execute(
                update(table)
                .where(table.c.owner == owner, table.c.spki_sha256 == spki_sha256)
                .values(serial=serial, not_after=not_after)
            )

    def release(self, owner: str, spki_sha256: str) -> None:
        table = client_identities
        # Its own commit, like the claim it undoes: a caller's unit is failing here and
        # would take the release back with it.
        with own_transaction(self._engine) as conn:
            conn.execute(
                delete(table).where(
                    table.c.owner == owner,
                    table.c.spki_sha256 == spki_sha256,
                    table.c.serial.is_(None),
                )
            )


def _relay(row: RowMapping) -> RelayRequest:
    return RelayRequest(
        state_sha256=row["state_sha256"],
        csr_pem=row["csr"],
        subject=row["subject"],
        spki_sha256=row["spki_sha256"],
        status=RelayStatus(row["status"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        owner=row["owner"],
        serial=row["serial"],
        decided_by=row["decided_by"],
        source=row["source"],
    )


class SqlRelayStore:
    """Implements :class:`imprint.identities.relay.RelayStore`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(self, request: RelayRequest) -> None:
        with writing(self._engine) as conn:
            conn.execute(
                insert(relay_requests).values(
                    state_sha256=request.state_sha256,
                    csr=request.csr_pem,
                    subject=request.subject,
                    spki_sha256=request.spki_sha256,
                    status=request.status.value,
                    owner=request.owner,
                    serial=request.serial,
                    decided_by=request.decided_by,
                    source=None if request.source is None else request.source[:64],
                    created_at=request.created_at,
                    expires_at=request.expires_at,
                )
            )

    def get(self, state_sha256: str) -> RelayRequest | None:
        query = select(relay_requests).where(relay_requests.c.state_sha256 == state_sha256)
        with reading(self._engine) as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else _relay(row)

    def decide(
        self,
        state_sha256: str,
        status: RelayStatus,
        *,
        owner: str | None,
        serial: str | None,
        decided_by: str,
        at: datetime,
    ) -> bool:
        table = relay_requests
        with writing(self._engine) as conn:
            result = conn.execute(
                update(table)
                .where(
                    table.c.state_sha256 == state_sha256,
                    table.c.status == RelayStatus.PENDING.value,
                    table.c.expires_at > at,
                )
                .values(status=status.value, owner=owner, serial=serial, decided_by=decided_by)
            )
        return result.rowcount == 1

    def take(self, state_sha256: str) -> RelayRequest | None:
        table = relay_requests
        with writing(self._engine) as conn:
            row = (
                conn.execute(
                    delete(table)
                    .where(
                        table.c.state_sha256 == state_sha256,
                        table.c.status != RelayStatus.PENDING.value,
                    )
                    .returning(*table.c)
                )
                .mappings()
                .first()
            )
        return None if row is None else _relay(row)

    def purge(self, before: datetime) -> int:
        with writing(self._engine) as conn:
            result = conn.execute(
                delete(relay_requests).where(relay_requests.c.expires_at < before)
            )
        return result.rowcount


def _psk_context(psk_id: str) -> str:
    return f"client-psk:{psk_id}"


def _psk(row: RowMapping, key: bytes = b"") -> ClientPsk:
    return ClientPsk(
        id=row["id"],
        org_id=row["org_id"],
        subject=row["subject"],
        origin=PskOrigin(row["origin"]),
        created_by=row["created_by"],
        created_at=row["created_at"],
        key=key,
    )


class SqlPskStore:
    """Implements :class:`imprint.identities.psk.PskStore`; keys sealed with the KEK."""

    def __init__(self, engine: Engine, box: SecretBox) -> None:
        self._engine = engine
        self._box = box

    def add(self, psk: ClientPsk) -> None:
        try:
            with writing(self._engine) as conn, guarded(conn):
                conn.execute(
                    insert(client_psks).values(
                        id=psk.id,
                        org_id=psk.org_id,
                        subject=psk.subject,
                        key_sealed=self._box.seal(psk.key, _psk_context(psk.id)),
                        origin=psk.origin.value,
                        created_by=psk.created_by[:200],
                        created_at=psk.created_at,
                    )
                )
        except IntegrityError:
            raise PskSubjectTaken(
                f"organization {psk.org_id!r} has a PSK with subject {psk.subject!r}"
            ) from None

    def _row(self, psk_id: str) -> RowMapping:
        query = select(client_psks).where(client_psks.c.id == psk_id)
        with reading(self._engine) as conn:
            row = conn.execute(query).mappings().first()
        if row is None:
            raise NotFound(f"no PSK {psk_id!r}")
        return row

    def get(self, psk_id: str) -> ClientPsk:
        return _psk(self._row(psk_id))

    def with_key(self, psk_id: str) -> ClientPsk:
        """The PSK and its opened key (for handing it to devices of the organization)."""
        row = self._row(psk_id)
        return _psk(row, self._box.open(row["key_sealed"], _psk_context(row["id"])))

    def search(self, org_ids: set[str] | None, limit: int) -> Sequence[ClientPsk]:
        query = select(client_psks).order_by(client_psks.c.created_at, client_psks.c.id)
        if org_ids is not None:
            query = query.where(client_psks.c.org_id.in_(sorted(org_ids)))
        with reading(self._engine) as conn:
            return [_psk(row) for row in conn.execute(query.limit(limit)).mappings()]

    def remove(self, psk_id: str) -> None:
        with writing(self._engine) as conn:
            result = conn.execute(delete(client_psks).where(client_psks.c.id == psk_id))
        if result.rowcount != 1:
            raise NotFound(f"no PSK {psk_id!r}")
