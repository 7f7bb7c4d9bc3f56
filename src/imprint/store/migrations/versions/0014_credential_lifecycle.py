"""API keys get an expiry; devices are found by their own id.

``api_keys.expires_at`` is when a key stops working (NULL: never). Keys that exist keep
working as before. A revoked key is deleted; the audit log keeps its history.
``devices.device_id`` gets an index: admins address a device by its id.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from imprint.store.tables import UTCDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("expires_at", UTCDateTime))
    op.create_index("ix_devices_device_id", "devices", ["device_id"])


def downgrade() -> None:
    op.drop_index("ix_devices_device_id", table_name="devices")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("expires_at")
