"""The Alembic history builds exactly the models' schema, on SQLite and PostgreSQL, and unwinds."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect

from gateway.store.database import ALL_METADATA
from gateway.store.migrate import downgrade, upgrade


def test_migrations_match_the_models(state_engine: Engine) -> None:
    with state_engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), ALL_METADATA)  # type: ignore[arg-type]
    assert differences == []


def test_downgrade_to_base_and_up_again(state_engine: Engine) -> None:
    downgrade(state_engine, "base")
    assert set(inspect(state_engine).get_table_names()) <= {"alembic_version"}
    upgrade(state_engine)
    assert "audit_event" in inspect(state_engine).get_table_names()
