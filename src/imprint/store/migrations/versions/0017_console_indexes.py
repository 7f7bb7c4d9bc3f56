"""The console's device list, newest activity first, without sorting the whole table.

The list's default order is ``devices.updated_at`` descending; with this index a page
(50 rows, at any offset) is read in index order instead of sorting every device of the
user's organizations first.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_devices_updated_at", "devices", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_devices_updated_at", table_name="devices")
