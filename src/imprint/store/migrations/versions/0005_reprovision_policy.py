"""Re-provisioning policy and renewal grace period per enrollment.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("enrollments") as batch:
        batch.add_column(
            sa.Column("reprovision", sa.String(16), nullable=False, server_default="allow")
        )
        batch.add_column(
            sa.Column("renewal_grace_days", sa.Integer, nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("enrollments") as batch:
        batch.drop_column("renewal_grace_days")
        batch.drop_column("reprovision")
