"""Derived bounds and keys of row-level expressions, and post-processing with its accuracy."""

from __future__ import annotations

import math

import pytest
import sqlglot
from sqlglot import exp

from gateway.data.catalog import ColumnSpec
from gateway.exceptions import InvalidQuery, QueryNotSupported
from gateway.query.expressions import check_post_expression, derived_spec, evaluate, holds

COLUMNS = {
    "age": ColumnSpec(type="integer", lower=0, upper=100),
    "income": ColumnSpec(type="float", lower=-50, upper=1000, decimals=2),
    "pc6": ColumnSpec(type="string", public_keys=["1234AB", "1234CD", "5678EF"]),
    "born": ColumnSpec(type="date"),
    "free": ColumnSpec(type="integer"),
}


def _spec(sql: str) -> ColumnSpec:
    return derived_spec(sqlglot.parse_one(sql), COLUMNS, sql)


@pytest.mark.parametrize(
    ("sql", "kind", "lower", "upper"),
    [
        ("age + income", "float", -50, 1100),
        ("age - income", "float", -1000, 150),
        ("income * age", "float", -5000, 100_000),
        ("age * -2", "integer", -200, 0),
        ("age / 4", "float", 0, 25),
        ("CASE WHEN age > 90 THEN 1 ELSE 0 END", "integer", 0, 1),
        ("COALESCE(age, -5)", "integer", -5, 100),
    ],
)
def test_bounds_follow_by_interval_arithmetic(sql: str, kind: str, lower: float, upper: float) -> None:
    spec = _spec(sql)
    assert (spec.type, spec.lower, spec.upper) == (kind, lower, upper)


def test_keys_follow_from_constants_date_parts_and_prefixes() -> None:
    assert _spec("CASE WHEN age < 18 THEN 'kind' WHEN age < 67 THEN 'volwassen' ELSE 'oudere' END").keys == (
        "kind", "volwassen", "oudere",
    )  # fmt: skip
    assert _spec("EXTRACT(MONTH FROM born)").keys == tuple(str(month) for month in range(1, 13))
    assert _spec("EXTRACT(YEAR FROM born)").keys is None  # partition selection
    assert _spec("LEFT(pc6, 4)").keys == ("1234", "5678")
    assert _spec("COALESCE(pc6, 'onbekend')").keys == ("1234AB", "1234CD", "5678EF", "onbekend")


@pytest.mark.parametrize(
    ("sql", "error"),
    [
        ("free + 1", None),  # no bounds: fine to group by, refused by SUM (see the statistics)
        ("pc6 + 1", QueryNotSupported),
        ("COALESCE(age, 'x')", InvalidQuery),
        ("income * income * income * income", QueryNotSupported),
        ("EXTRACT(MONTH FROM pc6)", QueryNotSupported),
        ("age * age * age * age * age * age * age * age * 0", QueryNotSupported),  # 1e16 on the way to 0
    ],
)
def test_expressions_without_sound_bounds_are_refused(sql: str, error: type[Exception] | None) -> None:
    if error is None:
        assert _spec(sql).lower is None
        return
    with pytest.raises(error):
        _spec(sql)


def _post(sql: str) -> exp.Expression:
    return check_post_expression(
        sqlglot.parse_one(sql), lambda node: str(node.name) if isinstance(node, exp.Column) else None
    )


def test_a_ratio_carries_its_half_width_by_the_delta_method() -> None:
    value, width = evaluate(_post("a / b"), {"a": (100.0, 4.0), "b": (50.0, 2.0)})
    assert value == 2.0
    assert width == pytest.approx((4.0 + 2.0 * 2.0) / 50.0)
    value, width = evaluate(_post("a * 1000.0 / b"), {"a": (10.0, 1.0), "b": (2000.0, 0.0)})
    assert (value, width) == (pytest.approx(5.0), pytest.approx(0.5))
    value, width = evaluate(_post("POWER(a, 2)"), {"a": (3.0, 0.1)})
    assert (value, width) == (pytest.approx(9.0), pytest.approx(0.6))
    assert evaluate(_post("ROUND(a, 1)"), {"a": (3.14159, 0.01)}) == (pytest.approx(3.1), pytest.approx(0.06))
    assert evaluate(_post("PI()"), {}) == (math.pi, 0.0)


def test_post_processing_gives_null_not_an_error_outside_a_functions_domain() -> None:
    assert evaluate(_post("a / b"), {"a": (1.0, 0.0), "b": (0.0, 0.0)}) == (None, None)
    assert evaluate(_post("SQRT(a)"), {"a": (-4.0, 1.0)}) == (None, None)
    assert evaluate(_post("LN(a)"), {"a": (0.0, 1.0)}) == (None, None)
    assert evaluate(_post("EXP(a)"), {"a": (1e6, 1.0)}) == (None, None)
    assert evaluate(_post("a * b"), {"a": (1e308, 0.0), "b": (10.0, 0.0)}) == (None, None)
    assert evaluate(_post("a + 1"), {"a": (None, None)}) == (None, None)


def test_having_filters_released_values_with_sql_null_semantics() -> None:
    condition = check_post_expression(
        sqlglot.parse_one("SELECT 1 HAVING n > 10 AND NOT m IS NULL").args["having"].this,
        lambda node: str(node.name) if isinstance(node, exp.Column) else None,
        condition=True,
    )
    assert holds(condition, {"n": (11, 1.0), "m": (1, 0.0)})
    assert not holds(condition, {"n": (9, 1.0), "m": (1, 0.0)})
    assert not holds(condition, {"n": (None, None), "m": (1, 0.0)})
