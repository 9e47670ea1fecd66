"""Pushdown: the compiled statement bounds contributions, keeps only public keys, and counts exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.catalog import load_catalog
from gateway.exceptions import InvalidQuery, QueryNotSupported, UnknownColumn
from gateway.query.compile import compile_counts
from gateway.query.sql_frontend import parse_sql
from gateway.query.validate import validate_plan
from gateway.sources import DuckDBSource

CATALOG = """
datasets:
  visits:
    source: {kind: csv, path: visits.csv}
    privacy_unit: person
    max_contributions: 2
    columns:
      person: {type: string, kind: identifier}
      wijk: {type: string, kind: quasi_identifier, public_keys: [A, B]}
      age: {type: integer, kind: attribute, lower: 0, upper: 120}
      day: {type: date}
      flag: {type: boolean}
"""
# person p1 has 5 visits in A; p2 one in A; p3 two in B; p4 one in C (not a public key); two visits
# without a person (cannot be bounded, never counted); p5's age is not a number (a CSV is what it is).
ROWS = [("p1", "A", "30")] * 5 + [
    ("p2", "A", "40"),
    ("p3", "B", "50"),
    ("p3", "B", "50"),
    ("p4", "C", "60"),
    ("", "A", "20"),
    ("", "A", "20"),
    ("p5", "B", "unknown"),
]


@pytest.fixture
def visits(tmp_path: Path):  # type: ignore[no-untyped-def]
    lines = ["person,wijk,age,day,flag"] + [
        f"{p},{w},{a},2026-01-0{i % 9 + 1},true" for i, (p, w, a) in enumerate(ROWS)
    ]
    (tmp_path / "visits.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    dataset = load_catalog(tmp_path / "catalog.yaml").dataset("visits")
    assert dataset is not None
    return dataset


def _run(dataset, sql: str) -> dict[tuple[str, ...], tuple[int, ...]]:  # type: ignore[no-untyped-def]
    plan = parse_sql(sql)
    validate_plan(plan, dataset)
    width = len(plan.group_by)
    return {tuple(row[:width]): tuple(row[width:]) for row in DuckDBSource().fetch_all(compile_counts(plan, dataset))}


def test_each_unit_contributes_at_most_max_contributions_rows(visits) -> None:  # type: ignore[no-untyped-def]
    # p1's five rows count as two; p4's row is in a non-public wijk; rows without a person are dropped.
    assert _run(visits, "SELECT wijk, COUNT(*) FROM visits GROUP BY wijk") == {("A",): (3,), ("B",): (3,)}


def test_filters_apply_before_bounding(visits) -> None:  # type: ignore[no-untyped-def]
    assert _run(visits, "SELECT wijk, COUNT(*) FROM visits WHERE age >= 40 GROUP BY wijk") == {
        ("A",): (1,),
        ("B",): (2,),
    }


def test_ungrouped_count_and_count_of_a_column(visits) -> None:  # type: ignore[no-untyped-def]
    # Without grouping all five units count, bounded: 2 + 1 + 2 + 1 + 1; p5's age is NULL.
    assert _run(visits, "SELECT COUNT(*), COUNT(age) FROM visits") == {(): (7, 6)}


def test_the_statement_is_a_single_select_without_raw_rows(visits) -> None:  # type: ignore[no-untyped-def]
    plan = parse_sql("SELECT wijk, COUNT(*) FROM visits WHERE age > 1 GROUP BY wijk")
    sql = compile_counts(plan, visits)
    assert sql.count(";") == 0
    assert 'PARTITION BY "person"' in sql
    assert "IN ('A', 'B')" in sql
    assert "GROUP BY" in sql


def test_literals_are_quoted_by_the_compiler(visits) -> None:  # type: ignore[no-untyped-def]
    sql = compile_counts(parse_sql("SELECT COUNT(*) FROM visits WHERE wijk = 'A'' OR 1=1 --'"), visits)
    assert "'A'' OR 1=1 --'" in sql
    assert _run(visits, "SELECT COUNT(*) FROM visits WHERE wijk = 'A'' OR 1=1 --'") == {(): (0,)}


@pytest.mark.parametrize(
    ("sql", "error", "message"),
    [
        ("SELECT nope, COUNT(*) FROM visits GROUP BY nope", UnknownColumn, "no column 'nope'"),
        ("SELECT COUNT(nope) FROM visits", UnknownColumn, "nope"),
        ("SELECT COUNT(*) FROM visits WHERE nope = 1", UnknownColumn, "nope"),
        ("SELECT person, COUNT(*) FROM visits GROUP BY person", QueryNotSupported, "identifier"),
        ("SELECT age, COUNT(*) FROM visits GROUP BY age", QueryNotSupported, "no public keys"),
        ("SELECT COUNT(*) FROM visits WHERE age = 'old'", InvalidQuery, "integer"),
        ("SELECT COUNT(*) FROM visits WHERE wijk = 3", InvalidQuery, "string"),
        ("SELECT COUNT(*) FROM visits WHERE day = '2026-13-01'", InvalidQuery, "date"),
        ("SELECT COUNT(*) FROM visits WHERE flag = 'yes'", InvalidQuery, "boolean"),
        ("SELECT COUNT(*) FROM visits WHERE age = wijk", QueryNotSupported, "one column"),
        ("SELECT COUNT(*) FROM visits WHERE age > 9223372036854775808", InvalidQuery, "integer"),
        ("SELECT COUNT(*) FROM visits WHERE day = '20260101'", InvalidQuery, "date"),
        ("SELECT COUNT(*) FROM visits WHERE day = '2026-W01-1'", InvalidQuery, "date"),
        ("SELECT COUNT(*) FROM visits WHERE wijk = -3", InvalidQuery, "string"),
    ],
)
def test_plans_are_checked_against_the_catalog(visits, sql: str, error: type[Exception], message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=message):
        validate_plan(parse_sql(sql), visits)


def test_valid_literals_pass(visits) -> None:  # type: ignore[no-untyped-def]
    validate_plan(
        parse_sql(
            "SELECT COUNT(*) FROM visits WHERE age > -1 AND day >= '2026-01-01' AND flag = TRUE AND wijk IS NULL"
        ),
        visits,
    )
