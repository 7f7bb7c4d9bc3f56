"""Organization columns for per-organization scoping.

Certificates get the organization they were issued for (``owner``), so a member sees
the certificates of her organizations and the list filters in SQL. Existing rows take
the owner of the device whose current certificate they are; the others (certificates
an API key or the command line issued, or ones a device has since replaced) stay
without an owner, which only the whole instance (an API key) sees.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("certificates") as batch:
        batch.add_column(sa.Column("owner", sa.String(100)))
        batch.create_index("ix_certificates_owner", ["owner"])
    certificates = sa.table("certificates", sa.column("serial"), sa.column("owner"))
    devices = sa.table("devices", sa.column("owner"), sa.column("certificate_serial"))
    op.execute(
        certificates.update().values(
            owner=sa.select(devices.c.owner)
            .where(devices.c.certificate_serial == certificates.c.serial)
            .limit(1)
            .scalar_subquery()
        )
    )


def downgrade() -> None:
    with op.batch_alter_table("certificates") as batch:
        batch.drop_index("ix_certificates_owner")
        batch.drop_column("owner")
