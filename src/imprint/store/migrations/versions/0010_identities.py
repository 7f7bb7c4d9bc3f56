"""Client identities: the identity held per owner, the browser relay and PSKs.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from imprint.store.tables import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "client_identities",
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("spki_sha256", sa.String(64), nullable=False),
        sa.Column("serial", sa.String(40)),
        sa.Column("not_after", UTCDateTime),
        sa.Column("claimed_at", UTCDateTime, nullable=False),
        sa.Column("requested_by", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("owner", name="pk_client_identities"),
    )
    op.create_table(
        "relay_requests",
        sa.Column("state_sha256", sa.String(64), nullable=False),
        sa.Column("csr", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("spki_sha256", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("owner", sa.String(100)),
        sa.Column("serial", sa.String(40)),
        sa.Column("decided_by", sa.String(200)),
        sa.Column("source", sa.String(64)),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("state_sha256", name="pk_relay_requests"),
    )
    op.create_index("ix_relay_requests_expires_at", "relay_requests", ["expires_at"])
    op.create_table(
        "client_psks",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("org_id", sa.String(100), nullable=False),
        sa.Column("subject", sa.String(100), nullable=False),
        sa.Column("key_sealed", sa.LargeBinary, nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_client_psks"),
        sa.UniqueConstraint("org_id", "subject", name="uq_client_psks_org_id_subject"),
    )
    op.create_index("ix_client_psks_org_id", "client_psks", ["org_id"])


def downgrade() -> None:
    op.drop_table("client_psks")
    op.drop_index("ix_relay_requests_expires_at", table_name="relay_requests")
    op.drop_table("relay_requests")
    op.drop_table("client_identities")
