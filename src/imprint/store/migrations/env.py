"""Alembic environment: runs on the connection that imprint hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from imprint.store.tables import metadata

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("imprint migrations run through 'imprint db upgrade', not the alembic CLI")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
