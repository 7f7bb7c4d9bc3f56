"""Manufacturer CRLs uploaded by an administrator for x509 attestation.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from imprint.store.tables import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "manufacturer_crls",
        sa.Column("issuer_key_sha256", sa.String(64), nullable=False),
        sa.Column("issuer", sa.Text, nullable=False),
        sa.Column("crl_number", sa.String(42)),
        sa.Column("this_update", UTCDateTime, nullable=False),
        sa.Column("next_update", UTCDateTime),
        sa.Column("revoked_count", sa.Integer, nullable=False),
        sa.Column("fingerprint_sha256", sa.String(64), nullable=False),
        sa.Column("der", sa.LargeBinary, nullable=False),
        sa.Column("uploaded_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("issuer_key_sha256", name="pk_manufacturer_crls"),
    )


def downgrade() -> None:
    op.drop_table("manufacturer_crls")
