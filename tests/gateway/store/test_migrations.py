"""The Alembic history builds exactly the models' schema, on SQLite and PostgreSQL, and unwinds."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, select

from audit.db_types import UTCDateTime
from gateway.store.database import ALL_METADATA, create_state_engine, session_factory
from gateway.store.migrate import downgrade, upgrade
from policies import budget, service
from policies.models import BudgetSpend, Grant
from tests.factories import NOW, grant


def test_migrations_match_the_models(state_engine: Engine) -> None:
    with state_engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), ALL_METADATA)  # type: ignore[arg-type]
    assert differences == []


def test_downgrade_to_base_and_up_again(state_engine: Engine) -> None:
    downgrade(state_engine, "base")
    assert set(inspect(state_engine).get_table_names()) <= {"alembic_version"}
    upgrade(state_engine)
    assert "audit_event" in inspect(state_engine).get_table_names()


def test_0010_gives_older_spends_their_dataset_and_the_catalog_moves_them_into_its_space(state_db_url: str) -> None:
    """An upgrade hands out no fresh budget: what was spent per dataset before unit spaces existed counts
    against the space the catalog puts the dataset in."""
    engine = create_state_engine(state_db_url)
    upgrade(engine, "0009")
    sessions = session_factory(engine)
    with sessions() as session:
        service.register_purpose(session, code="beleid", description="d", owner="o")
        service.create_principal(
            session, principal_id="ana", display_name="Ana", organisation="sd", kind="user", now=NOW
        )
        held = grant(session, subject="principal:ana", domain="sd", purpose="beleid", epsilon_per_period=1.0)
        session.commit()
        grant_id = held.id
    spent_before = sa.Table(  # budget_spend as revision 0009 has it: no unit_space
        "budget_spend",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("principal_id", sa.String),
        sa.Column("dataset", sa.String),
        sa.Column("grant_id", sa.Integer),
        sa.Column("period", sa.String),
        sa.Column("epsilon", sa.Float),
        sa.Column("delta", sa.Float),
        sa.Column("status", sa.String),
        sa.Column("request_id", sa.String),
        sa.Column("spent_at", UTCDateTime()),
    )
    with engine.begin() as connection:
        for dataset, epsilon in (("residents", 0.5), ("bijstand", 0.25), ("woninginbraak", 0.125)):
            connection.execute(
                sa.insert(spent_before).values(
                    principal_id="ana",
                    dataset=dataset,
                    grant_id=grant_id,
                    period="2026-11",
                    epsilon=epsilon,
                    delta=0.0,
                    status="released",
                    request_id="r",
                    spent_at=NOW,
                )
            )
    upgrade(engine)
    with sessions() as session:
        rows = session.execute(select(BudgetSpend.dataset, BudgetSpend.unit_space).order_by(BudgetSpend.id)).all()
        assert [tuple(row) for row in rows] == [
            ("residents", "residents"),
            ("bijstand", "bijstand"),
            ("woninginbraak", "woninginbraak"),
        ]
        spaces = {"residents": "person", "bijstand": "person", "wmo": "person", "woninginbraak": "woninginbraak"}
        assert budget.assign_unit_spaces(session, spaces) == 2
        session.commit()
        assert budget.assign_unit_spaces(session, spaces) == 0  # once moved, they stay
        held_again = session.get(Grant, grant_id)
        assert held_again is not None
        person = budget.budget_state(session, held_again, principal_id="ana", unit_space="person", caps=(), now=NOW)
        assert person.principal_spent == 0.75  # the person spaces' old spends count against the person
        by_space = {row["dataset"]: row["unit_space"] for row in budget.usage(session)}
    assert by_space == {"residents": "person", "bijstand": "person", "woninginbraak": "woninginbraak"}
    downgrade(engine, "0009")  # and back: the column goes, the spends stay
    assert "unit_space" not in {column["name"] for column in inspect(engine).get_columns("budget_spend")}
    with engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(spent_before)).scalar_one() == 3
    engine.dispose()
