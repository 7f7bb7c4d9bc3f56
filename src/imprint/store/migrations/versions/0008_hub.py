"""Hub (OAuth provider) settings per enrollment.

``hub`` holds the provider as JSON without its client secret; the secret is sealed
with the key-encryption key in ``hub_client_secret_sealed``.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("enrollments") as batch:
        batch.add_column(sa.Column("hub", sa.Text))
        batch.add_column(sa.Column("hub_client_secret_sealed", sa.LargeBinary))


def downgrade() -> None:
    with op.batch_alter_table("enrollments") as batch:
        batch.drop_column("hub_client_secret_sealed")
        batch.drop_column("hub")
