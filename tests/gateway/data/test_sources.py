"""Data sources: an operator's own catalog, and PostgreSQL tables computing exactly what DuckDB does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from gateway.data.catalog import load_catalog
from gateway.data.sources import Sources
from gateway.exceptions import CatalogError
from gateway.http.app import create_app
from gateway.query.compile import compile_statistics
from gateway.query.sql_frontend import parse_sql
from gateway.query.statistics import plan_statistics
from gateway.query.validate import validate_plan
from gateway.settings import Settings
from gateway.store.database import create_state_engine, session_factory
from gateway.store.migrate import upgrade
from policies import service as policy_service
from tests.factories import NOW, grant

ROWS = [
    ("c1", "Noord", 1200.50, 1981),
    ("c2", "Noord", 300.00, 1990),
    ("c3", "Zuid", 45000.99, 1975),
    ("c4", "Zuid", 0.0, 2001),
    ("c5", "Zuid", 99999.0, 1962),
    ("c6", "Oost", 15.25, 1999),
]
COLUMNS = """
    columns:
      client_id: {type: string, kind: identifier}
      wijk: {type: string, kind: quasi_identifier, public_keys: {file: wijken.txt}}
      schuld: {type: float, kind: sensitive, lower: 0, upper: 100000, decimals: 2}
      geboortejaar: {type: integer, kind: quasi_identifier, lower: 1920, upper: 2026}
"""
CSV_CATALOG = (
    """
datasets:
  schuldhulp:
    description: Schuldhulpverlening, export uit het regiesysteem
    source: {kind: csv, path: schuldhulp.csv}
    privacy_unit: client_id
"""
    + COLUMNS
)
PG_CATALOG = (
    """
datasets:
  schuldhulp_pg:
    source: {kind: postgresql, table: schuldhulp, url_env: DATAPOORT_TEST_SOURCE_URL}
    privacy_unit: client_id
"""
    + COLUMNS
)
QUESTION = (
    "SELECT wijk, COUNT(*), SUM(schuld), AVG(schuld), VARIANCE(geboortejaar), MEDIAN(schuld) "
    "FROM {table} WHERE geboortejaar >= 1970 GROUP BY wijk"
)


def _write_csv_catalog(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "wijken.txt").write_text("Noord\nZuid\nOost\nWest\n")
    lines = ["client_id,wijk,schuld,geboortejaar", *(f"{c},{w},{s},{y}" for c, w, s, y in ROWS)]
    (directory / "schuldhulp.csv").write_text("\n".join(lines) + "\n")
    (directory / "catalog.yaml").write_text(CSV_CATALOG)
    return directory / "catalog.yaml"


def _analyst_key(state_db_url: str) -> str:
    """A migrated state database with one analyst allowed to aggregate the schuld* datasets; their key."""
    engine = create_state_engine(state_db_url)
    upgrade(engine)
    with session_factory(engine)() as session:
        policy_service.register_purpose(session, code="schuldhulp-monitor", description="Monitor", owner="SD")
        policy_service.create_principal(
            session, principal_id="ana", display_name="Ana", organisation="sociaal-domein", kind="user", now=NOW
        )
        token = policy_service.issue_key(session, principal_id="ana", now=NOW).token
        grant(session, subject="principal:ana", dataset="schuld*", purpose="schuldhulp-monitor", epsilon_per_period=5.0)
        session.commit()
    engine.dispose()
    return token


@pytest.fixture
def operator_api(state_db_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    """A gateway on an operator's own catalog (not the demo), with one analyst allowed to aggregate."""
    catalog = _write_csv_catalog(tmp_path / "data")
    token = _analyst_key(state_db_url)
    settings = Settings(_env_file=None, data_dir=tmp_path, database_url=state_db_url, catalog=catalog)  # type: ignore[call-arg]
    with TestClient(create_app(settings)) as client:
        yield client, token


def test_an_operators_csv_dataset_is_queryable_without_code(operator_api: tuple[TestClient, str]) -> None:
    client, token = operator_api
    headers = {"Authorization": f"Bearer {token}"}
    listed = client.get("/v1/datasets", headers=headers).json()["datasets"]
    assert [d["name"] for d in listed] == ["schuldhulp"]
    response = client.post(
        "/v1/query",
        json={
            "purpose": "schuldhulp-monitor",
            "sql": "SELECT wijk, COUNT(*) FROM schuldhulp GROUP BY wijk",
            "epsilon": 1,
        },
        headers=headers,
    )
    assert response.status_code == 200, response.text
    assert [row[0] for row in response.json()["rows"]] == ["Noord", "Zuid", "Oost", "West"]  # West: a noisy zero


# Grouping by a column without public keys (partition selection), with constants that a driver could
# mistake for bind parameters (':name', '%s').
SELECTED_QUESTION = (
    "SELECT geboortejaar, COUNT(*), SUM(schuld) FROM {table} "
    "WHERE wijk NOT IN ('a:b', '100%s', ':wijk', '50%', '%(k)s') GROUP BY geboortejaar"
)


def _exact_rows(
    dataset_catalog: Path, name: str, sources: Sources, question: str = QUESTION
) -> list[tuple[object, ...]]:
    dataset = load_catalog(dataset_catalog).dataset(name)
    assert dataset is not None
    plan = parse_sql(question.format(table=name))
    validate_plan(plan, dataset)
    select_keys = any(dataset.columns[column].keys is None for column in plan.group_by)
    compiled = compile_statistics(plan, dataset, plan_statistics(plan, dataset), select_keys=select_keys)
    return sorted(
        tuple(int(v) if not isinstance(v, str) and v is not None else v for v in row)
        for row in sources.run(name, dataset, compiled.sql)
    )


@pytest.mark.parametrize("question", [QUESTION, SELECTED_QUESTION])
def test_postgresql_computes_exactly_what_duckdb_computes(
    postgres_schema_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, question: str
) -> None:
    engine = create_engine(postgres_schema_url)
    with engine.begin() as connection:
        connection.execute(
            text("CREATE TABLE schuldhulp (client_id text, wijk text, schuld double precision, geboortejaar integer)")
        )
        connection.execute(
            text("INSERT INTO schuldhulp VALUES (:c, :w, :s, :y)"),
            [{"c": c, "w": w, "s": s, "y": y} for c, w, s, y in ROWS],
        )
    engine.dispose()
    monkeypatch.setenv("DATAPOORT_TEST_SOURCE_URL", postgres_schema_url)
    csv_catalog = _write_csv_catalog(tmp_path / "csv")
    (tmp_path / "csv" / "pg.yaml").write_text(PG_CATALOG)
    sources = Sources()
    try:
        from_duckdb = _exact_rows(csv_catalog, "schuldhulp", sources, question)
        from_postgres = _exact_rows(tmp_path / "csv" / "pg.yaml", "schuldhulp_pg", sources, question)
    finally:
        sources.close()
    assert from_postgres == from_duckdb
    assert len(from_duckdb) > 0


def test_a_postgresql_table_whose_types_disagree_with_the_catalog_is_refused(
    postgres_schema_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_engine(postgres_schema_url)
    with engine.begin() as connection:
        connection.execute(
            text("CREATE TABLE schuldhulp (client_id text, wijk text, schuld text, geboortejaar integer)")
        )
    engine.dispose()
    monkeypatch.setenv("DATAPOORT_TEST_SOURCE_URL", postgres_schema_url)
    _write_csv_catalog(tmp_path)
    (tmp_path / "pg.yaml").write_text(PG_CATALOG)
    sources = Sources()
    try:
        with pytest.raises(CatalogError, match="schuld"):
            _exact_rows(tmp_path / "pg.yaml", "schuldhulp_pg", sources)
    finally:
        sources.close()


def test_a_postgresql_source_without_its_url_is_a_catalog_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATAPOORT_TEST_SOURCE_URL", raising=False)
    _write_csv_catalog(tmp_path)
    (tmp_path / "pg.yaml").write_text(PG_CATALOG)
    sources = Sources()
    try:
        with pytest.raises(CatalogError, match="DATAPOORT_TEST_SOURCE_URL"):
            _exact_rows(tmp_path / "pg.yaml", "schuldhulp_pg", sources)
    finally:
        sources.close()


def test_a_null_group_from_partition_selection_sorts_first_instead_of_failing(tmp_path: Path) -> None:
    """A column without public keys can hold NULL, and its group can pass selection; ORDER BY on it must
    not compare None with text (a 500 after the read, charged)."""
    from typing import Any

    from gateway.query import service as query_service
    from policies.models import Grant

    catalog = load_catalog(_write_csv_catalog(tmp_path))
    plan, dataset = query_service.plan_query(
        "SELECT geboortejaar, COUNT(*) FROM schuldhulp GROUP BY geboortejaar ORDER BY geboortejaar DESC", catalog
    )
    validate_plan(plan, dataset)
    prepared = query_service.build_release(
        plan,
        dataset,
        Grant(budget_period="month", epsilon_per_period=10.0, legal_basis="public_task"),
        epsilon=2.0,
        limits=query_service.QueryLimits(default_epsilon=1.0, max_epsilon=2.0, max_groups=100),
        budget=catalog.space_budget(plan.dataset),
    )
    assert prepared.selection is not None

    class Rows:
        def run(self, *args: object, **kwargs: object) -> list[tuple[Any, ...]]:
            # (group, rows statistic) per group: three large groups, one of them NULL.
            return [(None, 10_000), ("1980", 10_000), ("1990", 10_000)]

    answer = query_service.execute(prepared, Rows())  # type: ignore[arg-type]
    assert [row[0] for row in answer.rows] == ["1990", "1980", None]


def test_a_source_that_is_not_ready_refuses_before_any_budget_is_reserved(
    state_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATAPOORT_TEST_SOURCE_URL", raising=False)
    _write_csv_catalog(tmp_path)
    (tmp_path / "pg.yaml").write_text(PG_CATALOG)
    token = _analyst_key(state_db_url)
    settings = Settings(_env_file=None, data_dir=tmp_path, database_url=state_db_url, catalog=tmp_path / "pg.yaml")  # type: ignore[call-arg]
    with TestClient(create_app(settings)) as client:
        response = client.post(
            "/v1/query",
            json={"purpose": "schuldhulp-monitor", "sql": "SELECT COUNT(*) FROM schuldhulp_pg"},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert (response.status_code, response.json()["error"]) == (503, "catalog_invalid")
    engine = create_state_engine(state_db_url)
    with session_factory(engine)() as session:
        from sqlalchemy import func, select

        from policies.models import BudgetSpend

        assert session.scalar(select(func.count()).select_from(BudgetSpend)) == 0
    engine.dispose()


def test_a_statement_past_its_deadline_is_stopped() -> None:
    """A valid 480-group quantile query ran 15 s on 100,000 rows: nothing bounded a statement's time."""
    import time

    from gateway.data.sources import DuckDBSource
    from gateway.exceptions import StatementTimeout

    source = DuckDBSource(statement_seconds=0.3)
    start = time.monotonic()
    with pytest.raises(StatementTimeout):
        source.fetch_all("SELECT count(*) FROM range(1000000000) a, range(1000) b WHERE a.range % 7 = b.range")
    assert time.monotonic() - start < 5
    assert source.fetch_all("SELECT 1") == [(1,)]  # the connection is fine afterwards
    source.close()
