"""Channels per device (the ThingSpeak model): fields, write and read keys, entries.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from imprint.store.tables import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_FIELDS = range(1, 9)


def upgrade() -> None:
    with op.batch_alter_table("enrollments") as batch:
        batch.add_column(sa.Column("channel", sa.Text))
    op.create_table(
        "channels",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("device_ref", sa.String(36), nullable=False),
        sa.Column("device_id", sa.String(200), nullable=False),
        sa.Column("enrollment_id", sa.String(63), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        *(sa.Column(f"field{n}", sa.String(100)) for n in _FIELDS),
        sa.Column("last_entry_id", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_channels"),
        sa.UniqueConstraint("device_ref", name="uq_channels_device_ref"),
    )
    op.create_index("ix_channels_owner", "channels", ["owner"])
    op.create_table(
        "channel_keys",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("channel_id", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("lookup_sha256", sa.String(64), nullable=False),
        sa.Column("key_sealed", sa.LargeBinary, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_channel_keys"),
        sa.UniqueConstraint("lookup_sha256", name="uq_channel_keys_lookup_sha256"),
    )
    op.create_index("ix_channel_keys_channel_id_kind", "channel_keys", ["channel_id", "kind"])
    op.create_table(
        "channel_entries",
        sa.Column("channel_id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("entry_id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        *(sa.Column(f"field{n}", sa.Text) for n in _FIELDS),
        sa.Column("latitude", sa.String(32)),
        sa.Column("longitude", sa.String(32)),
        sa.Column("elevation", sa.String(32)),
        sa.Column("status", sa.Text),
        sa.PrimaryKeyConstraint("channel_id", "entry_id", name="pk_channel_entries"),
    )
    op.create_index(
        "ix_channel_entries_channel_id_created_at", "channel_entries", ["channel_id", "created_at"]
    )


def downgrade() -> None:
    for table in ("channel_entries", "channel_keys", "channels"):
        op.drop_table(table)
    with op.batch_alter_table("enrollments") as batch:
        batch.drop_column("channel")
