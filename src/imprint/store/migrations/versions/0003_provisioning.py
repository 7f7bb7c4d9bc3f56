"""Devices, provisioning records, nonces and per-mechanism material.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from imprint.store.tables import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("device_id", sa.String(200), nullable=False),
        sa.Column("enrollment_id", sa.String(63), nullable=False),
        sa.Column("mechanism", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("certificate_serial", sa.String(40)),
        sa.Column("pinned_fingerprint", sa.String(64)),
        sa.Column("public_key_sha256", sa.String(64)),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("provisioned_at", UTCDateTime),
        sa.PrimaryKeyConstraint("id", name="pk_devices"),
        sa.UniqueConstraint("owner", "device_id", name="uq_devices_owner_device_id"),
    )
    op.create_index("ix_devices_enrollment_id_status", "devices", ["enrollment_id", "status"])
    op.create_index("ix_devices_status", "devices", ["status"])
    op.create_table(
        "provisioning_records",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("device_ref", sa.String(36)),
        sa.Column("enrollment_id", sa.String(63)),
        sa.Column("mechanism", sa.String(32), nullable=False),
        sa.Column("registration_id", sa.String(200)),
        sa.Column("step", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("code", sa.String(64)),
        sa.Column("detail", sa.Text),
        sa.Column("source", sa.String(64)),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_provisioning_records"),
    )
    op.create_index(
        "ix_provisioning_records_device_ref_at", "provisioning_records", ["device_ref", "at"]
    )
    op.create_index("ix_provisioning_records_request_id", "provisioning_records", ["request_id"])
    op.create_index("ix_provisioning_records_at", "provisioning_records", ["at"])
    op.create_table(
        "used_nonces",
        sa.Column("scope", sa.String(64), nullable=False),
        sa.Column("nonce", sa.String(128), nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("scope", "nonce", name="pk_used_nonces"),
    )
    op.create_index("ix_used_nonces_expires_at", "used_nonces", ["expires_at"])
    op.create_table(
        "oob_secrets",
        sa.Column("enrollment_id", sa.String(63), nullable=False),
        sa.Column("device_id", sa.String(200), nullable=False),
        sa.Column("secret_sealed", sa.LargeBinary, nullable=False),
        sa.Column("valid_until", UTCDateTime, nullable=False),
        sa.Column("used_at", UTCDateTime),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("enrollment_id", "device_id", name="pk_oob_secrets"),
    )
    op.create_table(
        "registration_keys",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("enrollment_id", sa.String(63), nullable=False),
        sa.Column("lookup_sha256", sa.String(64), nullable=False),
        sa.Column("key_sealed", sa.LargeBinary, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("expires_at", UTCDateTime),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_registration_keys"),
        sa.UniqueConstraint("lookup_sha256", name="uq_registration_keys_lookup_sha256"),
    )
    op.create_index(
        "ix_registration_keys_enrollment_id_state", "registration_keys", ["enrollment_id", "state"]
    )
    op.create_table(
        "client_cas",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("enrollment_id", sa.String(63), nullable=False),
        sa.Column("fingerprint_sha256", sa.String(64), nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("pem", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_client_cas"),
        sa.UniqueConstraint(
            "enrollment_id",
            "fingerprint_sha256",
            name="uq_client_cas_enrollment_id_fingerprint_sha256",
        ),
    )
    op.create_table(
        "denied_certificates",
        sa.Column("fingerprint_sha256", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("fingerprint_sha256", name="pk_denied_certificates"),
    )


def downgrade() -> None:
    for table in (
        "denied_certificates",
        "client_cas",
        "registration_keys",
        "oob_secrets",
        "used_nonces",
        "provisioning_records",
        "devices",
    ):
        op.drop_table(table)
