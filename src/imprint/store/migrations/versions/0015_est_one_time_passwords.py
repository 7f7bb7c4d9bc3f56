"""One-time passwords for EST's HTTP Basic authentication, and devices found by key.

``one_time_passwords`` holds the SHA-256 of each password (never the password), the
device and enrollment it admits, its expiry and when it was used. The index on
``devices.public_key_sha256`` lets provisioning refuse a key already certified for
another device without a scan.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from imprint.store.tables import UTCDateTime

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "one_time_passwords",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("enrollment_id", sa.String(63), nullable=False),
        sa.Column("device_id", sa.String(200), nullable=False),
        sa.Column("password_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("used_at", UTCDateTime),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_one_time_passwords"),
        sa.UniqueConstraint("password_sha256", name="uq_one_time_passwords_password_sha256"),
    )
    op.create_index(
        "ix_one_time_passwords_enrollment_id_device_id",
        "one_time_passwords",
        ["enrollment_id", "device_id"],
    )
    op.create_index("ix_devices_public_key_sha256", "devices", ["public_key_sha256"])


def downgrade() -> None:
    op.drop_index("ix_devices_public_key_sha256", table_name="devices")
    op.drop_table("one_time_passwords")
