"""The release layer: each aggregate's mechanisms are calibrated to its statistics' sensitivities, the
epsilon charged is the sum of its parts, and post-processing keeps values within what the bounds allow."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from gateway.data.catalog import DatasetSpec, load_catalog
from gateway.query.release import build_mechanisms, epsilons_for_accuracy, even_split, release_aggregate
from gateway.query.sql_frontend import parse_sql
from gateway.query.statistics import plan_statistics


@pytest.fixture(scope="module")
def residents(demo_dir: Path) -> DatasetSpec:
    dataset = load_catalog(demo_dir / "catalog.yaml").dataset("residents")
    assert dataset is not None
    return dataset


def _mechanisms(dataset: DatasetSpec, sql: str, epsilon: float = 1.0, max_contributions: int = 1):  # type: ignore[no-untyped-def]
    plans = plan_statistics(parse_sql(sql), dataset)
    return build_mechanisms(
        plans, epsilons=even_split(len(plans), epsilon), max_contributions=max_contributions, confidence=0.95
    )


@pytest.mark.parametrize(
    ("sql", "scales"),
    [
        ("SELECT COUNT(*) FROM residents", [1.0]),
        ("SELECT SUM(income) FROM residents", [250_000.0]),  # bound 250,000, one row per person
        ("SELECT AVG(income) FROM residents", [2.0, 250_000.0]),  # eps/2 each; centred bound 125,000
        ("SELECT VAR_POP(birth_year) FROM residents", [3.0, 150.0, 7_500.0]),  # eps/3 each; centred bound 50
    ],
)
def test_scales_follow_sensitivity_over_epsilon(residents: DatasetSpec, sql: str, scales: list[float]) -> None:
    (built,) = _mechanisms(residents, sql)
    assert [m.scale for m in built.statistics] == pytest.approx(scales, rel=1e-9)
    assert built.epsilon == pytest.approx(1.0)
    assert built.epsilon <= 1.0


def test_max_contributions_multiplies_every_sensitivity(residents: DatasetSpec) -> None:
    (single,) = _mechanisms(residents, "SELECT AVG(income) FROM residents")
    (triple,) = _mechanisms(residents, "SELECT AVG(income) FROM residents", max_contributions=3)
    for one, three in zip(single.statistics, triple.statistics, strict=True):
        assert three.scale == pytest.approx(3 * one.scale)
    (quantile_one,) = _mechanisms(residents, "SELECT MEDIAN(income) FROM residents")
    (quantile_three,) = _mechanisms(residents, "SELECT MEDIAN(income) FROM residents", max_contributions=3)
    assert quantile_one.quantile is not None
    assert quantile_three.quantile is not None
    assert quantile_three.quantile.scale == pytest.approx(3 * quantile_one.quantile.scale)


def test_a_query_costs_the_sum_of_its_aggregates(residents: DatasetSpec) -> None:
    built = _mechanisms(residents, "SELECT COUNT(*), AVG(income), MEDIAN(income) FROM residents", epsilon=1.5)
    assert [m.epsilon for m in built] == pytest.approx([0.5, 0.5, 0.5])
    assert math.fsum(m.epsilon for m in built) <= 1.5


def test_accuracy_targets_price_counts_and_sums(residents: DatasetSpec) -> None:
    plans = plan_statistics(parse_sql("SELECT COUNT(*), SUM(income) FROM residents"), residents)
    epsilons = epsilons_for_accuracy(plans, half_width=1000.0, confidence=0.95, max_contributions=1)
    built = build_mechanisms(plans, epsilons=epsilons, max_contributions=1, confidence=0.95)
    assert built[0].statistics[0].half_width == pytest.approx(1000.0, rel=1e-6)
    assert built[1].statistics[0].half_width == pytest.approx(1000.0, rel=1e-6)
    assert epsilons[1] > epsilons[0] * 1000  # a sum of incomes needs far more epsilon for the same ±


def test_means_and_variances_stay_within_what_the_bounds_allow(residents: DatasetSpec) -> None:
    """Even from absurd noisy statistics (an empty group), released values are clamped into range."""
    for sql, low, high in [  # epsilon 0.01: noise far larger than any real statistic
        ("SELECT AVG(income) FROM residents", 0.0, 250_000.0),
        ("SELECT VAR_POP(income) FROM residents", 0.0, 125_000.0**2),
    ]:
        (built,) = _mechanisms(residents, sql, epsilon=0.01)
        exact = {statistic.key: [0] for statistic in built.plan.statistics}
        for _ in range(50):
            value = release_aggregate(built, exact, None).values[0]
            assert low <= value <= high
