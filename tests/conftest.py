"""Shared fixtures: a migrated state database on SQLite always and on PostgreSQL when configured.

PostgreSQL tests run when ``DATAPOORT_TEST_POSTGRES_URL`` is set (each test gets a schema of its own).
Without it they are skipped and pytest's summary lists them; with ``DATAPOORT_REQUIRE_POSTGRES=1`` (as
``.ci/run`` sets) a missing PostgreSQL is a failure, not a skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.orm import Session, sessionmaker

from gateway.demo import generator
from gateway.store.database import create_state_engine, session_factory
from gateway.store.migrate import upgrade

POSTGRES_URL = os.environ.get("DATAPOORT_TEST_POSTGRES_URL")
REQUIRE_POSTGRES = os.environ.get("DATAPOORT_REQUIRE_POSTGRES") == "1"
DEMO_RESIDENTS = 3_000


def _postgres_or_skip() -> str:
    if POSTGRES_URL:
        return POSTGRES_URL
    if REQUIRE_POSTGRES:
        pytest.fail("DATAPOORT_REQUIRE_POSTGRES=1 but DATAPOORT_TEST_POSTGRES_URL is not set")
    pytest.skip("PostgreSQL not configured (set DATAPOORT_TEST_POSTGRES_URL to run this test on it)")


def _schema_url(base_url: str, schema: str) -> str:
    url = make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


@contextmanager
def _fresh_schema(prefix: str) -> Iterator[str]:
    """A PostgreSQL schema of its own for one test, dropped afterwards; yields a URL that uses it."""
    base = _postgres_or_skip()
    schema = f"{prefix}_{uuid.uuid4().hex[:16]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _schema_url(base, schema)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def state_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty state database: a fresh SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    with _fresh_schema("dp_test") as url:
        yield url


@pytest.fixture
def postgres_schema_url() -> Iterator[str]:
    """A fresh PostgreSQL schema for tests that are about PostgreSQL itself (e.g. as a data source)."""
    with _fresh_schema("dp_src") as url:
        yield url


@pytest.fixture
def state_engine(state_db_url: str) -> Iterator[Engine]:
    engine = create_state_engine(state_db_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(state_engine: Engine) -> sessionmaker[Session]:
    return session_factory(state_engine)


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small Voorbeeldstad, built once per test session; tests must not modify it."""
    directory = tmp_path_factory.mktemp("voorbeeldstad")
    generator.generate(directory, residents=DEMO_RESIDENTS)
    return directory
