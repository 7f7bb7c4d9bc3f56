"""An audit entry appended in one statement (PostgreSQL).

Appending took two round trips: ``imprint_audit_tail`` (migration 0020) took the chain's
advisory lock and read the tail, then the client hashed the entry and sent the INSERT.
The lock is held to the end of the transaction, so every registration's transaction
held it across the client's turn between the two and all its later statements; at 16
in flight, a transaction waited 66 ms on average for it (pg_stat_statements), and the
lock, not the CPU, set the rate.

``imprint_audit_append`` does the whole append in one call: the lock, the tail (read in
a statement of its own, so in a snapshot taken with the lock held, as in 0020), the id,
the hash and the INSERT. The hash is SHA-256 of the predecessor's hash and the entry's
canonical JSON (:meth:`imprint.audit.AuditRecord.canonical`); the client knows every
field of that JSON but the id, so it sends the bytes before the id's digits and the
bytes after them, and the function joins them around the id it drew. The function
returns the new entry's id. ``imprint_audit_tail`` stays: the nodes of an older imprint
still append with it during a rolling upgrade, under the same lock.

SQLite takes its writer lock for the whole transaction and needs nothing here.

Revision ID: 0023
Revises: 0022
"""

from __future__ import annotations

from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

_CREATE = """
CREATE OR REPLACE FUNCTION imprint_audit_append(
    chain_lock bigint, genesis varchar, before_id bytea, after_id bytea,
    p_at timestamptz, p_actor varchar, p_action varchar, p_target_type varchar,
    p_target_id varchar, p_org_id varchar, p_outcome varchar, p_details text
) RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    prev varchar;
    new_id bigint;
    new_hash varchar;
BEGIN
    PERFORM pg_advisory_xact_lock(chain_lock);
    -- A statement of its own, so a snapshot taken with the lock held.
    SELECT hash INTO prev FROM audit_log ORDER BY id DESC LIMIT 1;
    prev := COALESCE(NULLIF(prev, ''), genesis);
    -- From the column's sequence; a schema made by hand or restored without it: the
    -- tail's id plus one (as safe, the lock being held).
    new_id := COALESCE(
        nextval(pg_get_serial_sequence('audit_log', 'id')),
        (SELECT COALESCE(MAX(id), 0) + 1 FROM audit_log)
    );
    new_hash := encode(
        sha256(convert_to(prev, 'UTF8') || before_id || convert_to(new_id::text, 'UTF8')
               || after_id),
        'hex'
    );
    INSERT INTO audit_log (
        id, at, actor, action, target_type, target_id, org_id, outcome, details,
        prev_hash, hash
    ) VALUES (
        new_id, p_at, p_actor, p_action, p_target_type, p_target_id, p_org_id, p_outcome,
        p_details, prev, new_hash
    );
    RETURN new_id;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_CREATE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DROP FUNCTION IF EXISTS imprint_audit_append(bigint, varchar, bytea, bytea,"
            " timestamptz, varchar, varchar, varchar, varchar, varchar, varchar, text)"
        )
