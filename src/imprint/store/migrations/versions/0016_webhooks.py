"""Webhooks: subscriptions, their delivery log, expiry notices sent, provisioning hooks
and the claims a hook added to a device.

``webhook_subscriptions`` holds each subscription's HMAC secret sealed with the
key-encryption key (it must be reused to sign); ``webhook_deliveries`` one row per
delivery attempt (never a secret); ``webhook_expiry_marks`` one row per certificate and
threshold already notified, so each threshold is told once; ``provisioning_hooks`` one
hook per organization; ``device_claims`` the attributes and services a hook added.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from imprint.store.tables import UTCDateTime

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_subscriptions",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("org_id", sa.String(100), nullable=False),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("events", sa.Text(), nullable=False),
        sa.Column("description", sa.String(200)),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("secret_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_subscriptions"),
    )
    op.create_index("ix_webhook_subscriptions_org_id", "webhook_subscriptions", ["org_id"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("subscription_id", sa.String(36), nullable=False),
        sa.Column("org_id", sa.String(100), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("status_code", sa.Integer()),
        sa.Column("error", sa.String(500)),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_deliveries"),
    )
    op.create_index(
        "ix_webhook_deliveries_subscription_id_id",
        "webhook_deliveries",
        ["subscription_id", "id"],
    )
    op.create_index("ix_webhook_deliveries_org_id_id", "webhook_deliveries", ["org_id", "id"])
    op.create_index("ix_webhook_deliveries_event_id", "webhook_deliveries", ["event_id"])
    op.create_table(
        "webhook_expiry_marks",
        sa.Column("serial", sa.String(40), nullable=False),
        sa.Column("threshold_days", sa.Integer(), nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("serial", "threshold_days", name="pk_webhook_expiry_marks"),
    )
    op.create_table(
        "provisioning_hooks",
        sa.Column("org_id", sa.String(100), nullable=False),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("secret_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("timeout_seconds", sa.Float(), nullable=False),
        sa.Column("on_failure", sa.String(8), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("org_id", name="pk_provisioning_hooks"),
    )
    op.create_table(
        "device_claims",
        sa.Column("device_ref", sa.String(36), nullable=False),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("attributes", sa.Text(), nullable=False),
        sa.Column("services", sa.Text(), nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("device_ref", name="pk_device_claims"),
    )


def downgrade() -> None:
    op.drop_table("device_claims")
    op.drop_table("provisioning_hooks")
    op.drop_table("webhook_expiry_marks")
    op.drop_index("ix_webhook_deliveries_event_id", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_org_id_id", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_subscription_id_id", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index("ix_webhook_subscriptions_org_id", table_name="webhook_subscriptions")
    op.drop_table("webhook_subscriptions")
