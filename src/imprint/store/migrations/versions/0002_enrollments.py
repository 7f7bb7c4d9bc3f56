"""Enrollments.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from imprint.store.tables import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "enrollments",
        sa.Column("id", sa.String(63), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("mechanism", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("profile", sa.String(32), nullable=False),
        sa.Column("validity_days", sa.Integer),
        sa.Column("key_types", sa.Text, nullable=False),
        sa.Column("device_id_rule", sa.String(32), nullable=False),
        sa.Column("device_id_pattern", sa.Text),
        sa.Column("registration_id", sa.String(200)),
        sa.Column("manual_approval", sa.Boolean, nullable=False),
        sa.Column("pre_shared_key_sealed", sa.LargeBinary),
        sa.Column("services", sa.Text, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("valid_from", UTCDateTime),
        sa.Column("valid_until", UTCDateTime),
        sa.Column("quota", sa.Integer),
        sa.Column("x509", sa.Text),
        sa.Column("group_key_sealed", sa.LargeBinary),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_enrollments"),
    )
    op.create_index("ix_enrollments_mechanism_enabled", "enrollments", ["mechanism", "enabled"])
    op.create_index("ix_enrollments_owner", "enrollments", ["owner"])


def downgrade() -> None:
    op.drop_index("ix_enrollments_owner", "enrollments")
    op.drop_index("ix_enrollments_mechanism_enabled", "enrollments")
    op.drop_table("enrollments")
