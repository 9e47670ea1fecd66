"""Alembic environment: one history for the tables of every domain."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from gateway.store.database import ALL_METADATA, create_state_engine

config = context.config


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=ALL_METADATA, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_state_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as fresh:
        _run(fresh)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `datapoort db upgrade` against a database")
run_migrations_online()
