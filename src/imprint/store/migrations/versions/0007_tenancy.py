"""Organizations, users, OAuth clients and the audit log.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from imprint.store.tables import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "organizations",
        sa.Column("id", sa.String(100), nullable=False),
        sa.Column("parent_id", sa.String(100)),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_organizations"),
    )
    op.create_index("ix_organizations_parent_id", "organizations", ["parent_id"])
    op.create_table(
        "users",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("username", sa.String(200), nullable=False),
        sa.Column("password_hash", sa.Text),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("username", name="uq_users_username"),
    )
    op.create_table(
        "memberships",
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("org_id", sa.String(100), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "org_id", name="pk_memberships"),
    )
    op.create_index("ix_memberships_org_id", "memberships", ["org_id"])
    op.create_table(
        "oauth_clients",
        sa.Column("client_id", sa.String(100), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("secret_sha256", sa.String(64)),
        sa.Column("grant_types", sa.Text, nullable=False),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("audience", sa.String(500)),
        sa.Column("redirect_uris", sa.Text, nullable=False),
        sa.Column("org_id", sa.String(100)),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("client_id", name="pk_oauth_clients"),
    )
    op.create_index("ix_oauth_clients_org_id", "oauth_clients", ["org_id"])
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(64), nullable=False),
        sa.Column("private_key_sealed", sa.LargeBinary, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("retired_at", UTCDateTime),
        sa.PrimaryKeyConstraint("kid", name="pk_signing_keys"),
    )
    op.create_table(
        "authorization_codes",
        sa.Column("code_sha256", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(100), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("org_id", sa.String(100)),
        sa.Column("redirect_uri", sa.Text, nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("nonce", sa.String(200)),
        sa.Column("code_challenge", sa.String(128), nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("used_at", UTCDateTime),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("code_sha256", name="pk_authorization_codes"),
    )
    op.create_index("ix_authorization_codes_expires_at", "authorization_codes", ["expires_at"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target_type", sa.String(32), nullable=False),
        sa.Column("target_id", sa.String(200)),
        sa.Column("org_id", sa.String(100)),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("details", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_org_id_at", "audit_log", ["org_id", "at"])


def downgrade() -> None:
    for table in (
        "audit_log",
        "authorization_codes",
        "signing_keys",
        "oauth_clients",
        "memberships",
        "users",
        "organizations",
    ):
        op.drop_table(table)
