"""Device codes of the OAuth 2.0 Device Authorization Grant (RFC 8628).

``device_codes`` holds the SHA-256 of each device code and user code (never the codes),
the client that asked, whether a user approved or denied it and for which
organization, its expiry, the polling interval and the last poll, so that every node of
a cluster answers a poll the same way and a code gives one token at most.

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from imprint.store.tables import UTCDateTime

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "device_codes",
        sa.Column("device_code_sha256", sa.String(64), nullable=False),
        sa.Column("user_code_sha256", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(100), nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("interval_seconds", sa.Integer, nullable=False),
        sa.Column("user_id", sa.String(36)),
        sa.Column("org_id", sa.String(100)),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("last_polled_at", UTCDateTime),
        sa.Column("decided_at", UTCDateTime),
        sa.PrimaryKeyConstraint("device_code_sha256", name="pk_device_codes"),
        sa.UniqueConstraint("user_code_sha256", name="uq_device_codes_user_code_sha256"),
    )
    op.create_index("ix_device_codes_expires_at", "device_codes", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_device_codes_expires_at", table_name="device_codes")
    op.drop_table("device_codes")
