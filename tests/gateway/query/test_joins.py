"""Joins, public tables and row-level expressions compiled to one statement: DuckDB and PostgreSQL compute the
same exact statistics, a Python reference agrees, and a person's contribution to a join stays within its bound."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from gateway.data.catalog import Catalog, load_catalog
from gateway.data.relations import raw_relation
from gateway.data.sources import Sources
from gateway.exceptions import QueryNotSupported, UnknownColumn
from gateway.query import service as query_service
from gateway.query.compile import compile_statistics
from gateway.query.joins import joined_relation
from gateway.query.statistics import plan_statistics
from gateway.query.validate import validate_plan

COLUMNS = {
    "persons": {
        "pid": "string",
        "area": "string",
        "age": "integer",
        "income": "float",
        "born": "date",
    },
    "visits": {"vid": "string", "pid": "string", "area": "string", "cost": "integer", "day": "date"},
    "care": {"pid": "string", "kind": "string"},
    "strangers": {"pid": "string", "area": "string"},
    "areas": {"area": "string", "inhabitants": "integer", "region": "string"},
}
PG_TYPES = {"string": "text", "integer": "bigint", "float": "double precision", "date": "date"}
CATALOG = """
unit_spaces:
  people: {{}}
datasets:
  persons:
    source: {persons}
    privacy_unit: pid
    unit_space: people
    columns:
      pid: {{type: string, kind: identifier}}
      area: {{type: string, public_keys: [A, B, C]}}
      age: {{type: integer, lower: 0, upper: 100}}
      income: {{type: float, lower: 0, upper: 1000, decimals: 2}}
      born: {{type: date}}
  visits:
    source: {visits}
    privacy_unit: pid
    unit_space: people
    max_contributions: 3
    columns:
      vid: {{type: string, kind: identifier}}
      pid: {{type: string, kind: identifier}}
      area: {{type: string, public_keys: [A, B, C]}}
      cost: {{type: integer, lower: 0, upper: 500}}
      day: {{type: date}}
  care:
    source: {care}
    privacy_unit: pid
    unit_space: people
    max_contributions: 2
    columns:
      pid: {{type: string, kind: identifier}}
      kind: {{type: string, public_keys: [x, y]}}
  strangers:
    source: {strangers}
    privacy_unit: pid
    columns:
      pid: {{type: string, kind: identifier}}
      area: {{type: string, public_keys: [A, B, C]}}
  areas:
    kind: public
    source: {areas}
    columns:
      area: {{type: string}}
      inhabitants: {{type: integer}}
      region: {{type: string}}
"""
AREAS = [("A", 1000, "noord"), ("B", 2000, "noord"), ("C", 500, "zuid")]


def _persons(count: int) -> list[tuple[Any, ...]]:
    return [
        (
            f"p{i}",
            "ABC"[i % 3],
            (i * 37) % 120 - 5,
            round((i * 73.37) % 1200 - 50, 2),
            dt.date(1950 + i % 60, 1 + i % 12, 1),
        )
        for i in range(count)
    ]


def _visits(persons: int, per_person: list[int]) -> list[tuple[Any, ...]]:
    rows = []
    for i in range(persons):
        for j in range(per_person[i % len(per_person)]):
            rows.append(
                (
                    f"v{i}_{j}",
                    f"p{i}",
                    "ABC"[(i + j) % 3],
                    (i * 11 + j * 97) % 700 - 50,
                    dt.date(2025, 1 + j % 12, 1 + i % 28),
                )
            )
    return rows


def _care(persons: int, per_person: list[int]) -> list[tuple[Any, ...]]:
    return [(f"p{i}", "xy"[j % 2]) for i in range(persons) for j in range(per_person[(i + 1) % len(per_person)])]


def _strangers(persons: int) -> list[tuple[Any, ...]]:
    return [(f"p{i}", "ABC"[i % 3]) for i in range(persons)]


class World:
    """The same rows as Parquet files and as PostgreSQL tables, with a catalog for each placement."""

    def __init__(self, directory: Path, pg_url: str | None) -> None:
        self.directory, self.pg_url = directory, pg_url
        self.sources = Sources()

    def load(self, tables: dict[str, list[tuple[Any, ...]]]) -> None:
        for name, rows in tables.items():
            names = list(COLUMNS[name])
            columns = list(zip(*rows, strict=True)) if rows else [[] for _ in names]
            pq.write_table(
                pa.table({n: list(c) for n, c in zip(names, columns, strict=True)}), self.directory / f"{name}.parquet"
            )
        if self.pg_url is None:
            return
        engine = create_engine(self.pg_url)
        with engine.begin() as connection:
            for name, rows in tables.items():
                columns = COLUMNS[name]
                connection.execute(text(f"DROP TABLE IF EXISTS {name}"))
                connection.execute(
                    text(f"CREATE TABLE {name} ({', '.join(f'{c} {PG_TYPES[t]}' for c, t in columns.items())})")
                )
                if rows:
                    placeholders = ", ".join(f":{c}" for c in columns)
                    connection.execute(
                        text(f"INSERT INTO {name} VALUES ({placeholders})"),
                        [dict(zip(columns, row, strict=True)) for row in rows],
                    )
        engine.dispose()

    def catalog(self, placement: str) -> Catalog:
        def source(name: str) -> str:
            in_postgres = placement == "postgresql" or (placement == "mixed" and name in ("persons", "areas"))
            if in_postgres:
                return f"{{kind: postgresql, table: {name}, url_env: DATAPOORT_TEST_JOIN_URL}}"
            return f"{{kind: parquet, path: {name}.parquet}}"

        path = self.directory / f"catalog-{placement}.yaml"
        path.write_text(CATALOG.format(**{name: source(name) for name in COLUMNS}))
        return load_catalog(path)

    def exact(self, sql: str, placement: str, *, cap: int = 10) -> list[tuple[Any, ...]]:
        """The compiled statement's rows (group keys, then exact statistics), sorted."""
        catalog = self.catalog(placement)
        resolved = query_service.resolve_sql(sql, catalog, self.sources, max_join_contributions=cap)
        plan, dataset = resolved.plan, resolved.dataset
        validate_plan(plan, dataset)
        if resolved.joined:
            relation = joined_relation(
                resolved,
                catalog,
                relation_for=lambda _name, spec: raw_relation(spec),
                public_table=self.sources.public.get,
                arrow_reader=self.sources.arrow_reader,
            )
        else:
            base = catalog.dataset(plan.dataset)
            assert base is not None
            relation = raw_relation(base)
        select_keys = any(dataset.columns[name].keys is None for name in plan.group_by)
        compiled = compile_statistics(
            plan, dataset, plan_statistics(plan, dataset), select_keys=select_keys, relation=relation
        )
        rows = self.sources.run_relation(relation, compiled.sql)
        return sorted(tuple(_plain(value) for value in row) for row in rows)

    def close(self) -> None:
        self.sources.close()


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal | float) and float(value).is_integer():
        return int(value)
    return value


def _world(directory: Path, url: str | None) -> World:
    world = World(directory, url)
    world.load(
        {
            "persons": _persons(60),
            # Within each dataset's max_contributions: no row is left out at random, so every engine sums the
            # same rows (the bound's own test below counts, which does not depend on which rows are kept).
            "visits": _visits(60, [0, 1, 2, 3]),
            "care": _care(60, [0, 1, 2]),
            "strangers": _strangers(60),
            "areas": AREAS,
        }
    )
    return world


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """The rows as files only."""
    world = _world(tmp_path, None)
    yield world
    world.close()


@pytest.fixture
def pg_world(tmp_path: Path, postgres_schema_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """The rows as files and as PostgreSQL tables."""
    monkeypatch.setenv("DATAPOORT_TEST_JOIN_URL", postgres_schema_url)
    world = _world(tmp_path, postgres_schema_url)
    yield world
    world.close()


CONSTRUCTS = [
    "SELECT p.area, COUNT(*), SUM(v.cost) FROM visits v JOIN persons p ON v.pid = p.pid GROUP BY p.area",
    "SELECT COUNT(*), COUNT(v.vid), SUM(p.age) FROM persons p LEFT JOIN visits v ON p.pid = v.pid",
    "SELECT c.kind, COUNT(*) FROM visits v JOIN care c ON v.pid = c.pid JOIN persons p ON p.pid = v.pid "
    "GROUP BY c.kind",
    "SELECT a.region, COUNT(*) FROM persons p JOIN areas a ON p.area = a.area GROUP BY a.region",
    "SELECT CASE WHEN age < 18 THEN 'kind' WHEN age < 67 THEN 'volwassen' ELSE 'oudere' END AS band, COUNT(*) "
    "FROM persons GROUP BY band",
    "SELECT SUM(CASE WHEN age > 90 THEN 1 ELSE 0 END), SUM(age + income), AVG(income * 2 - age), SUM(age / 4) "
    "FROM persons",
    "SELECT EXTRACT(MONTH FROM born) AS m, EXTRACT(QUARTER FROM born) AS q, COUNT(*) FROM persons GROUP BY m, q",
    "SELECT LEFT(area, 1) AS a, COUNT(*) FROM persons GROUP BY LEFT(area, 1)",
    "SELECT COALESCE(area, 'onbekend') AS a, COUNT(*) FROM persons GROUP BY COALESCE(area, 'onbekend')",
    "SELECT COUNT(DISTINCT pid), COUNT(*) FROM visits",
    "SELECT COUNT(*), SUM(cost) FROM (SELECT * FROM visits WHERE cost > 100) AS dure",
    "SELECT EXTRACT(YEAR FROM born) AS y, COUNT(*) FROM persons GROUP BY y",
    "SELECT p.area, COUNT(DISTINCT v.pid) FROM visits v JOIN persons p ON v.pid = p.pid GROUP BY p.area",
]


@pytest.mark.parametrize("sql", CONSTRUCTS)
def test_duckdb_and_postgresql_compute_the_same_statistics(pg_world: World, sql: str) -> None:
    from_files = pg_world.exact(sql, "files")
    assert from_files, "the question has rows"
    assert pg_world.exact(sql, "postgresql") == from_files
    if " JOIN " in sql:
        assert pg_world.exact(sql, "mixed") == from_files  # a PostgreSQL side moved into DuckDB


def _reference_join_count(visits: list[int], care: list[int], persons: int, bound: int) -> int:
    """COUNT(*) of visits JOIN care JOIN persons with each person's joined rows bounded, in Python."""
    total = 0
    for i in range(persons):
        joined = visits[i % len(visits)] * care[(i + 1) % len(care)] * 1
        total += min(joined, bound)
    return total


JOIN_COUNT = "SELECT COUNT(*) FROM visits v JOIN care c ON v.pid = c.pid JOIN persons p ON p.pid = v.pid"


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    visits=st.lists(st.integers(0, 6), min_size=1, max_size=5),
    care=st.lists(st.integers(0, 4), min_size=1, max_size=5),
    persons=st.integers(1, 12),
    cap=st.integers(1, 8),
)
def test_a_persons_contribution_to_a_join_stays_within_its_bound(
    pg_world: World, visits: list[int], care: list[int], persons: int, cap: int
) -> None:
    """A person in three joined datasets moves the count by at most the join's bound, the product of the
    datasets' max_contributions (3 x 2 x 1) or the tighter setting, on DuckDB and PostgreSQL alike."""
    bound = min(3 * 2 * 1, cap)
    world = pg_world
    world.load({"persons": _persons(persons), "visits": _visits(persons, visits), "care": _care(persons, care)})
    expected = _reference_join_count(visits, care, persons, bound)
    for placement in ("files", "postgresql", "mixed"):
        assert world.exact(JOIN_COUNT, placement, cap=cap) == [(expected,)]
    # Without person 0 (from every dataset at once): the count moves by at most the bound.
    world.load(
        {
            "persons": _persons(persons)[1:],
            "visits": [row for row in _visits(persons, visits) if row[1] != "p0"],
            "care": [row for row in _care(persons, care) if row[0] != "p0"],
        }
    )
    without = world.exact(JOIN_COUNT, "files", cap=cap)[0][0]
    assert 0 <= expected - without <= bound
    assert world.exact(JOIN_COUNT, "postgresql", cap=cap) == [(without,)]


def test_case_and_arithmetic_match_a_python_reference(world: World) -> None:
    persons = _persons(60)
    rows = world.exact(
        "SELECT SUM(CASE WHEN age > 90 THEN 1 ELSE 0 END), SUM(age + income), COUNT(*) FROM persons", "files"
    )
    clamp = lambda value, low, high: min(max(value, low), high)  # noqa: E731
    old = sum(1 for p in persons if p[2] > 90)
    # SUM(age + income): each operand clamped to its bounds, the sum in fixed point (2 decimals).
    total = sum(round((clamp(p[2], 0, 100) + clamp(p[3], 0, 1000)) * 100) for p in persons)
    assert rows == [(old, total, 60)]


@pytest.mark.parametrize(
    ("sql", "error", "message"),
    [
        ("SELECT COUNT(*) FROM visits v JOIN persons p ON v.area = p.area", QueryNotSupported, "privacy units only"),
        ("SELECT COUNT(*) FROM visits v JOIN persons p ON v.vid = p.pid", QueryNotSupported, "privacy units only"),
        ("SELECT COUNT(*) FROM persons p JOIN strangers s ON p.pid = s.pid", QueryNotSupported, "unit spaces"),
        ("SELECT COUNT(*) FROM persons p JOIN areas a ON p.pid = a.area", QueryNotSupported, "identifier"),
        (
            "SELECT v.vid, COUNT(*) FROM visits v JOIN persons p ON v.pid = p.pid GROUP BY v.vid",
            QueryNotSupported,
            "identifier",
        ),
        ("SELECT COUNT(*) FROM visits v JOIN persons p ON v.pid = p.nope", UnknownColumn, "nope"),
        ("SELECT COUNT(DISTINCT v.area) FROM visits v", QueryNotSupported, "privacy unit"),
        ("SELECT SUM(income * income * income * income) FROM persons", QueryNotSupported, "too wide"),
        ("SELECT AVG(EXTRACT(YEAR FROM born)) FROM persons", QueryNotSupported, "bounds"),
        ("SELECT area, COUNT(*) FROM areas GROUP BY area", QueryNotSupported, "public table"),
    ],
)
def test_what_would_break_the_bound_is_refused_with_its_reason(
    world: World, sql: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        world.exact(sql, "files")


def test_a_public_table_joined_on_a_column_that_is_not_unique_is_refused(world: World) -> None:
    world.load({"areas": [*AREAS, ("A", 5, "dubbel")]})
    with pytest.raises(QueryNotSupported, match="not unique"):
        world.exact(
            "SELECT a.region, COUNT(*) FROM persons p JOIN areas a ON p.area = a.area GROUP BY a.region", "files"
        )


DERIVED = (
    "SELECT SUM(CASE WHEN age > 90 THEN 1 ELSE 0 END), SUM(age * 2 - 10), COUNT(income), "
    "SUM(age + income), SUM(COALESCE(income, 7)) FROM persons"
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.tuples(
            st.integers(-50, 150),
            st.one_of(st.none(), st.integers(-10_000, 150_000).map(lambda cents: cents / 100)),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_derived_expressions_match_a_python_reference_on_both_engines(
    pg_world: World, rows: list[tuple[int, float | None]]
) -> None:
    """Values outside the bounds are clamped before arithmetic; CASE compares the raw value; the
    integer statistics equal a Python reference, the fixed-point ones agree between the engines."""
    persons = [(f"p{i}", "ABC"[i % 3], age, income, dt.date(2000, 1, 1)) for i, (age, income) in enumerate(rows)]
    pg_world.load({"persons": persons})
    old = sum(1 for age, _ in rows if age > 90)
    doubled = sum(min(max(age, 0), 100) * 2 - 10 for age, _ in rows)
    counted = sum(1 for _, income in rows if income is not None)
    (from_files,) = pg_world.exact(DERIVED, "files")
    assert from_files[:3] == (old, doubled, counted)
    assert pg_world.exact(DERIVED, "postgresql") == [from_files]
