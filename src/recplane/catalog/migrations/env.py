"""Alembic environment: recplane always hands in an open connection (see catalog.database)."""

from alembic import context

from recplane.catalog.tables import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
