"""A device's OOB secrets by its id alone.

A registration reads the secrets of the device it names in one indexed query and
decides from the cached enrollments which of them admit it, instead of first searching
the device's individual enrollments and then probing the primary key once per
candidate enrollment.

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_oob_secrets_device_id", "oob_secrets", ["device_id"])


def downgrade() -> None:
    op.drop_index("ix_oob_secrets_device_id", table_name="oob_secrets")
