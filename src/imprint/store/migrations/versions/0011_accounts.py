"""Accounts: console sessions ended by signing out (a copy of the cookie stops working
too) and, per user, the time before which her sessions and tokens are refused (set
when her password changes or she is disabled).

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from imprint.store.tables import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ended_console_sessions",
        sa.Column("session_sha256", sa.String(64), nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("session_sha256", name="pk_ended_console_sessions"),
    )
    op.create_index(
        "ix_ended_console_sessions_expires_at", "ended_console_sessions", ["expires_at"]
    )
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("sessions_valid_after", UTCDateTime))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("sessions_valid_after")
    op.drop_index("ix_ended_console_sessions_expires_at", table_name="ended_console_sessions")
    op.drop_table("ended_console_sessions")
