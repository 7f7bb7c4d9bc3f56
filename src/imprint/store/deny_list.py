"""The certificate deny-list and uploaded manufacturer CRLs on SQL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.engine import Engine, RowMapping
from sqlalchemy.exc import IntegrityError

from imprint.attestation.revocation import DeniedCertificate, ManufacturerCrl
from imprint.clock import Clock
from imprint.errors import Conflict, NotFound
from imprint.store.cache import ReadCache
from imprint.store.db import guarded, reading, writing
from imprint.store.tables import denied_certificates, manufacturer_crls

__all__ = ["SqlDenyList", "SqlManufacturerCrlStore"]

# Up to this many entries the whole deny-list is kept in memory (see store/cache.py);
# a longer one is asked entry by entry.
WHOLE_LIST_MAX = 10_000

_DENIED_ANY = select(denied_certificates).where(
    denied_certificates.c.fingerprint_sha256.in_(bindparam("fingerprints", expanding=True))
)
_DENIED_ALL = select(denied_certificates).limit(WHOLE_LIST_MAX + 1)
_CRLS_FOR = select(manufacturer_crls).where(
    manufacturer_crls.c.issuer_key_sha256.in_(bindparam("keys", expanding=True))
)


class SqlDenyList:
    """Implements :class:`imprint.attestation.revocation.DenyList`."""

    def __init__(self, engine: Engine, clock: Clock | None = None) -> None:
        self._engine = engine
        self._cache = ReadCache(engine, "deny_list", clock=clock)

    def add(self, entry: DeniedCertificate) -> None:
        try:
            with writing(self._engine) as conn, guarded(conn):
                self._cache.changed(conn)
                conn.execute(
                    insert(denied_certificates).values(
                        fingerprint_sha256=entry.fingerprint_sha256,
                        reason=entry.reason,
                        created_at=entry.created_at,
                    )
                )
        except IntegrityError:
            raise Conflict(
                "this certificate is on the deny-list already", code="already_denied"
            ) from None

    def remove(self, fingerprint_sha256: str) -> None:
        table = denied_certificates
        with writing(self._engine) as conn:
            self._cache.changed(conn)
            result = conn.execute(
                delete(table).where(table.c.fingerprint_sha256 == fingerprint_sha256)
            )
        if result.rowcount == 0:
            raise NotFound("this certificate is not on the deny-list")

    def first_of(self, fingerprints: Sequence[str]) -> DeniedCertificate | None:
        if not fingerprints:
            return None
        found = self._cache.get("whole", self._whole)
        if found is None:  # too long to keep: ask the database
            with reading(self._engine) as conn:
                rows = conn.execute(_DENIED_ANY, {"fingerprints": list(fingerprints)}).mappings()
                found = {row["fingerprint_sha256"]: _denied(row) for row in rows}
        for fingerprint in fingerprints:
            if fingerprint in found:
                return found[fingerprint]
        return None

    def _whole(self) -> dict[str, DeniedCertificate] | None:
        with reading(self._engine) as conn:
            rows = conn.execute(_DENIED_ALL).mappings().all()
        if len(rows) > WHOLE_LIST_MAX:
            return None
        return {row["fingerprint_sha256"]: _denied(row) for row in rows}

    def search(self, *, limit: int = 100, after: str | None = None) -> Sequence[DeniedCertificate]:
        table = denied_certificates
        query = select(table).order_by(table.c.fingerprint_sha256).limit(limit)
        if after is not None:
            query = query.where(table.c.fingerprint_sha256 > after)
        with reading(self._engine) as conn:
            return [_denied(row) for row in conn.execute(query).mappings()]


def _denied(row: RowMapping) -> DeniedCertificate:
    return DeniedCertificate(
        fingerprint_sha256=row["fingerprint_sha256"],
        reason=row["reason"],
        created_at=row["created_at"],
    )


def _crl(row: RowMapping) -> ManufacturerCrl:
    number = row["crl_number"]
    return ManufacturerCrl(
        issuer_key_sha256=row["issuer_key_sha256"],
        issuer=row["issuer"],
        crl_number=None if number is None else int(number, 16),
        this_update=row["this_update"],
        next_update=row["next_update"],
        revoked_count=row["revoked_count"],
        fingerprint_sha256=row["fingerprint_sha256"],
        der=bytes(row["der"]),
        uploaded_at=row["uploaded_at"],
    )


class SqlManufacturerCrlStore:
    """Implements :class:`imprint.attestation.revocation.ManufacturerCrlStore`."""

    def __init__(self, engine: Engine, clock: Clock | None = None) -> None:
        self._engine = engine
        self._cache = ReadCache(engine, "manufacturer_crls", clock=clock)

    def put(self, crl: ManufacturerCrl) -> None:
        values: dict[str, Any] = {
            "issuer": crl.issuer,
            "crl_number": None if crl.crl_number is None else format(crl.crl_number, "x"),
            "this_update": crl.this_update,
            "next_update": crl.next_update,
            "revoked_count": crl.revoked_count,
            "fingerprint_sha256": crl.fingerprint_sha256,
            "der": crl.der,
            "uploaded_at": crl.uploaded_at,
        }
        table = manufacturer_crls
        key = table.c.issuer_key_sha256 == crl.issuer_key_sha256
        with writing(self._engine) as conn:
            self._cache.changed(conn)
            if conn.execute(update(table).where(key).values(**values)).rowcount == 0:
                conn.execute(
                    insert(table).values(issuer_key_sha256=crl.issuer_key_sha256, **values)
                )

    def get(self, issuer_key_sha256: str) -> ManufacturerCrl | None:
        found = self.for_issuers([issuer_key_sha256])
        return found[0] if found else None

    def for_issuers(self, issuer_keys: Sequence[str]) -> Sequence[ManufacturerCrl]:
        if not issuer_keys:
            return []
        keys = tuple(issuer_keys)
        return self._cache.get(keys, lambda: self._for_issuers(keys))

    def _for_issuers(self, keys: tuple[str, ...]) -> Sequence[ManufacturerCrl]:
        with reading(self._engine) as conn:
            rows = conn.execute(_CRLS_FOR, {"keys": list(keys)}).mappings()
            return tuple(_crl(row) for row in rows)

    def remove(self, issuer_key_sha256: str) -> None:
        table = manufacturer_crls
        with writing(self._engine) as conn:
            self._cache.changed(conn)
            result = conn.execute(
                delete(table).where(table.c.issuer_key_sha256 == issuer_key_sha256)
            )
        if result.rowcount == 0:
            raise NotFound("no manufacturer CRL for this issuer key")

    def search(self, *, limit: int = 100) -> Sequence[ManufacturerCrl]:
        table = manufacturer_crls
        query = select(table).order_by(table.c.issuer, table.c.issuer_key_sha256).limit(limit)
        with reading(self._engine) as conn:
            return [_crl(row) for row in conn.execute(query).mappings()]
