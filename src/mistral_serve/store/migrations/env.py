"""Alembic's environment: migrations run on the connection the store opened (never a second
engine), inside its transaction. SQLite gets batch mode, which ALTER TABLE there needs."""

from __future__ import annotations

from alembic import context

from mistral_serve.store.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
