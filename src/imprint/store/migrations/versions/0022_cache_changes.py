"""How often each kind of cached object changed, for processes sharing a SQLite file.

Every process keeps caches of what each registration reads and an administrator rarely
changes (enrollments, the deny-list, client CAs, API keys, ...). On PostgreSQL a write
tells the other processes by ``NOTIFY``; on SQLite it now adds one to its kind's row
here, in its transaction, and each process looks for counts that moved (see
``imprint.store.cache``). PostgreSQL has the table too and leaves it empty.

Revision ID: 0022
Revises: 0021
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cache_changes",
        sa.Column("kind", sa.String(64), primary_key=True),
        sa.Column("changes", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cache_changes")
