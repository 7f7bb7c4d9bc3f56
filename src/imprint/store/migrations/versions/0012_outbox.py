"""The outbox, and certificates tied to their device.

``outbox`` holds the effects that must follow a commit (the broker's CRL, listeners,
webhooks later): written in the transaction that causes them, delivered until done.
``certificates.device_ref`` names the device a certificate was issued to, so revoking
a device reaches every certificate it ever held. Existing certificates are tied to
their device where the records say so: the device's current certificate, and the
serial each provisioning request's issue step recorded.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from imprint.store.tables import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("due_at", UTCDateTime, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.String(500)),
        sa.Column("done_at", UTCDateTime),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
    )
    op.create_index("ix_outbox_done_at_due_at", "outbox", ["done_at", "due_at"])
    with op.batch_alter_table("certificates") as batch:
        batch.add_column(sa.Column("device_ref", sa.String(36)))
    op.create_index("ix_certificates_device_ref", "certificates", ["device_ref"])
    op.execute(
        "UPDATE certificates SET device_ref = ("
        " SELECT d.id FROM devices d WHERE d.certificate_serial = certificates.serial)"
        " WHERE device_ref IS NULL"
    )
    op.execute(
        "UPDATE certificates SET device_ref = ("
        " SELECT MIN(r.device_ref) FROM provisioning_records r"
        " WHERE r.step = 'issue' AND r.status = 'ok'"
        " AND r.detail = 'serial ' || certificates.serial)"
        " WHERE device_ref IS NULL"
    )


def downgrade() -> None:
    op.drop_index("ix_certificates_device_ref", table_name="certificates")
    with op.batch_alter_table("certificates") as batch:
        batch.drop_column("device_ref")
    op.drop_index("ix_outbox_done_at_due_at", table_name="outbox")
    op.drop_table("outbox")
