"""A device's own individual enrollments by index; no index on step records' request id.

A symmetric-key registration without a named enrollment first looks for an individual
enrollment naming the device (and an OOB-secret device without a secret, for one it may
wait in). That query filtered ``registration_id`` through the ``(mechanism, enabled)``
index, reading every enrollment of the mechanism; it now has an index of its own.

No query reads provisioning step records by ``request_id`` (the console reads them by
time, a device's history by ``(device_ref, at)``), while every registration wrote about
five entries into that index: it goes.

Revision ID: 0021
Revises: 0020
"""

from __future__ import annotations

from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_enrollments_registration_id_mechanism", "enrollments", ["registration_id", "mechanism"]
    )
    op.drop_index("ix_provisioning_records_request_id", table_name="provisioning_records")


def downgrade() -> None:
    op.create_index("ix_provisioning_records_request_id", "provisioning_records", ["request_id"])
    op.drop_index("ix_enrollments_registration_id_mechanism", table_name="enrollments")
