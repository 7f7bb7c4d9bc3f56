"""The audit chain's lock and tail in one round trip (PostgreSQL).

An append to the audit log took the chain's advisory lock in one statement and read
the tail's hash (and drew the new entry's id) in the next: a plain statement reads in a
snapshot taken when it starts, before a lock it waits for inside it, so one statement
could not do both safely. ``imprint_audit_tail(key)`` can: it is a ``VOLATILE``
PL/pgSQL function, and each statement in such a function takes a snapshot of its own,
so the tail is read after the lock is held and sees every entry committed before.

SQLite takes its writer lock for the whole transaction and needs nothing here.

Revision ID: 0020
Revises: 0019
"""

from __future__ import annotations

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

_CREATE = """
CREATE OR REPLACE FUNCTION imprint_audit_tail(
    chain_lock bigint, OUT tail_hash varchar, OUT next_id bigint
) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(chain_lock);
    -- A statement of its own, so a snapshot taken with the lock held.
    SELECT hash INTO tail_hash FROM audit_log ORDER BY id DESC LIMIT 1;
    -- From the column's sequence; a schema made by hand or restored without it: the
    -- tail's id plus one (as safe, the lock being held).
    next_id := COALESCE(
        nextval(pg_get_serial_sequence('audit_log', 'id')),
        (SELECT COALESCE(MAX(id), 0) + 1 FROM audit_log)
    );
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_CREATE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS imprint_audit_tail(bigint)")
