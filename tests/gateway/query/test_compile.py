"""Pushdown: the compiled statement bounds contributions, keeps only public keys, and counts exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.data.catalog import load_catalog
from gateway.data.sources import DuckDBSource
from gateway.exceptions import InvalidQuery, QueryNotSupported, UnknownColumn
from gateway.query.compile import compile_statistics
from gateway.query.sql_frontend import parse_sql
from gateway.query.statistics import plan_statistics
from gateway.query.validate import validate_plan

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
      weight: {type: float, lower: 0, upper: 200}
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


def _compile(dataset, sql: str):  # type: ignore[no-untyped-def]
    plan = parse_sql(sql)
    validate_plan(plan, dataset)
    return compile_statistics(plan, dataset, plan_statistics(plan, dataset))


def _run(dataset, sql: str) -> dict[tuple[str, ...], tuple[int, ...]]:  # type: ignore[no-untyped-def]
    compiled = _compile(dataset, sql)
    width = compiled.group_width
    return {tuple(row[:width]): tuple(row[width:]) for row in DuckDBSource().fetch_all(compiled.sql)}


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
    sql = _compile(visits, "SELECT wijk, COUNT(*) FROM visits WHERE age > 1 GROUP BY wijk").sql
    assert sql.count(";") == 0
    assert 'PARTITION BY "person"' in sql
    assert "SEMI JOIN (VALUES ('A'), ('B'))" in sql
    assert "GROUP BY" in sql


def test_literals_are_quoted_by_the_compiler(visits) -> None:  # type: ignore[no-untyped-def]
    sql = _compile(visits, "SELECT COUNT(*) FROM visits WHERE wijk = 'A'' OR 1=1 --'").sql
    assert "'A'' OR 1=1 --'" in sql
    assert _run(visits, "SELECT COUNT(*) FROM visits WHERE wijk = 'A'' OR 1=1 --'") == {(): (0,)}


@pytest.mark.parametrize(
    ("sql", "error", "message"),
    [
        ("SELECT nope, COUNT(*) FROM visits GROUP BY nope", UnknownColumn, "no column 'nope'"),
        ("SELECT COUNT(nope) FROM visits", UnknownColumn, "nope"),
        ("SELECT COUNT(*) FROM visits WHERE nope = 1", UnknownColumn, "nope"),
        ("SELECT person, COUNT(*) FROM visits GROUP BY person", QueryNotSupported, "identifier"),
        ("SELECT weight, COUNT(*) FROM visits GROUP BY weight", QueryNotSupported, "float"),
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


HEAVY_CATALOG = """
datasets:
  payments:
    source: {kind: csv, path: payments.csv}
    privacy_unit: person
    max_contributions: 3
    columns:
      person: {type: string, kind: identifier}
      wijk: {type: string, public_keys: [A, B]}
      amount: {type: float, kind: sensitive, lower: 0, upper: 1000, decimals: 2}
"""


def _payments(tmp_path: Path, extra: list[str]):  # type: ignore[no-untyped-def]
    lines = ["person,wijk,amount", "p1,A,10.5", "p2,A,20.25", "p3,B,999.99", *extra]
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "payments.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "catalog.yaml").write_text(HEAVY_CATALOG)
    dataset = load_catalog(tmp_path / "catalog.yaml").dataset("payments")
    assert dataset is not None
    return dataset


def _statistics(dataset, sql: str) -> dict[tuple[str, ...], tuple[int, ...]]:  # type: ignore[no-untyped-def]
    return _run(dataset, sql)


def test_a_unit_with_10000_rows_moves_a_count_by_at_most_max_contributions(tmp_path: Path) -> None:
    base = _statistics(_payments(tmp_path / "a", []), "SELECT wijk, COUNT(*) FROM payments GROUP BY wijk")
    heavy = _statistics(
        _payments(tmp_path / "b", ["heavy,A,1.0"] * 10_000), "SELECT wijk, COUNT(*) FROM payments GROUP BY wijk"
    )
    moved = sum(abs(heavy[key][0] - base.get(key, (0,))[0]) for key in heavy)
    assert moved == 3  # exactly max_contributions, not 10,000


def test_a_value_of_10_to_the_12_moves_a_sum_by_at_most_the_bound(tmp_path: Path) -> None:
    sql = "SELECT SUM(amount) FROM payments"
    base = _statistics(_payments(tmp_path / "a", []), sql)[()][0]
    huge = _statistics(_payments(tmp_path / "b", ["huge,B,1000000000000"]), sql)[()][0]
    # Fixed point with 2 decimals: the bound 1000 is 100000 units; 10^12 is clamped to it.
    assert base == 1050 + 2025 + 99999
    assert huge - base == 100_000


def test_sums_are_exact_integers_of_clamped_fixed_point_values(tmp_path: Path) -> None:
    dataset = _payments(tmp_path, ["p4,B,-5", "p5,A,0.004", "p6,A,0.005"])
    assert _statistics(dataset, "SELECT SUM(amount) FROM payments") == {(): (1050 + 2025 + 99999 + 0 + 0 + 1,)}


def test_quantiles_group_by_their_bucket_on_the_public_grid(tmp_path: Path) -> None:
    dataset = _payments(tmp_path, [])
    compiled = _compile(dataset, "SELECT wijk, MEDIAN(amount) FROM payments GROUP BY wijk")
    assert compiled.grid is not None
    assert compiled.grid.count == 201
    rows = DuckDBSource().fetch_all(compiled.sql)
    # (wijk, bucket, count(amount)): 10.5 and 20.25 fall in bucket 3 (candidates 0, 5, 10, 15 ...).
    assert sorted(rows) == [("A", 3, 1), ("A", 5, 1), ("B", 200, 1)]


def test_a_csv_row_that_does_not_fit_the_guessed_type_is_null_not_an_error(tmp_path: Path) -> None:
    """With type guessing, one late row like this made the reader fail: an exact yes/no about one person."""
    rows = [f"p{i},A,{i % 500}.5" for i in range(30_000)] + ["victim,A,onbekend"]
    dataset = _payments(tmp_path, rows)
    assert _run(dataset, "SELECT COUNT(amount) FROM payments")[()][0] == 3 + 30_000
