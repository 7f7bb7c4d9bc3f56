"""The audit log becomes a hash chain.

``audit_log.prev_hash`` and ``audit_log.hash`` chain each entry to the one before it
(:mod:`imprint.audit` says how). The entries already there are chained here, oldest
first, a page at a time, so that the whole log verifies from its first entry. The
hashing is imprint's own, imported: a later change to it needs a migration that chains
the log again anyway.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from imprint.audit import GENESIS, AuditRecord, chain_time
from imprint.store.tables import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_PAGE = 1000


def upgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("prev_hash", sa.String(64)))
        batch.add_column(sa.Column("hash", sa.String(64)))
    log = sa.table(
        "audit_log",
        sa.column("id"),
        sa.column("at", UTCDateTime),
        sa.column("actor"),
        sa.column("action"),
        sa.column("target_type"),
        sa.column("target_id"),
        sa.column("org_id"),
        sa.column("outcome"),
        sa.column("details"),
        sa.column("prev_hash"),
        sa.column("hash"),
    )
    set_hashes = (
        sa.update(log)
        .where(log.c.id == sa.bindparam("row_id"))
        .values(prev_hash=sa.bindparam("row_prev"), hash=sa.bindparam("row_hash"))
    )
    conn = op.get_bind()
    prev, after = GENESIS, None
    while True:
        page = sa.select(log).order_by(log.c.id).limit(_PAGE)
        if after is not None:
            page = page.where(log.c.id > after)
        rows = conn.execute(page).all()
        if not rows:
            break
        changes = []
        for row in rows:
            record = AuditRecord(
                id=row.id,
                at=chain_time(row.at),
                actor=row.actor,
                action=row.action,
                target_type=row.target_type,
                target_id=row.target_id,
                org_id=row.org_id,
                outcome=row.outcome,
                details=row.details,
            )
            digest = record.chained_to(prev)
            changes.append({"row_id": row.id, "row_prev": prev, "row_hash": digest})
            prev = digest
        conn.execute(set_hashes, changes)
        after = rows[-1].id


def downgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("hash")
        batch.drop_column("prev_hash")
