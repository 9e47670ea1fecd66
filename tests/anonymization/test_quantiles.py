"""The quantile mechanism: parameters that would void the guarantee are refused, the sensitivity and the
noise are what the docstring claims, and the released candidate is the right one when the noise allows.

OpenDP's noise cannot be seeded, so every statistical assertion below is sized (by its binomial standard
error, noted next to it) to fail by chance with probability well under one in a million.
"""

from __future__ import annotations

import bisect
import itertools
import math
import statistics
from collections import Counter
from fractions import Fraction

import opendp.prelude as dp
import pytest

from anonymization import InvalidPrivacyParameter
from anonymization._quantiles import MECHANISM_NOISY_MIN_EXPONENTIAL, QuantileMechanism, candidate_grid

GRID = candidate_grid(0.0, 100.0, 101)


def _values(n: int) -> list[float]:
    """A skewed, known distribution on [0, 100): value = 100 u^2, so the alpha-quantile is 100 alpha^2."""
    return sorted(100.0 * (i / n) ** 2 for i in range(n))


def _at_most(sorted_values: list[float], candidates: tuple[float, ...]) -> list[int]:
    return [bisect.bisect_right(sorted_values, c) for c in candidates]


def _mechanism(**overrides: object) -> QuantileMechanism:
    params: dict[str, object] = {"candidates": GRID, "alpha": 0.5, "max_contributions": 1, "epsilon": 1.0}
    params.update(overrides)
    return QuantileMechanism(**params)  # type: ignore[arg-type]


# --- the public grid -------------------------------------------------------------------------------------


def test_grid_is_evenly_spaced_with_exact_endpoints() -> None:
    grid = candidate_grid(-5.0, 15.0, 5)
    assert grid == (-5.0, 0.0, 5.0, 10.0, 15.0)
    assert candidate_grid(0, 1, 2) == (0.0, 1.0)
    assert len(GRID) == 101
    assert GRID[0] == 0.0
    assert GRID[-1] == 100.0
    assert all(b - a == pytest.approx(1.0) for a, b in itertools.pairwise(GRID))


@pytest.mark.parametrize(
    ("lower", "upper", "count"),
    [(0.0, 1.0, 1), (0.0, 1.0, 0), (1.0, 1.0, 5), (2.0, 1.0, 5), (math.nan, 1.0, 5), (0.0, math.inf, 5), (0, 1, True)],
)
def test_grid_refuses_degenerate_requests(lower: float, upper: float, count: int) -> None:
    with pytest.raises(InvalidPrivacyParameter, match="grid"):
        candidate_grid(lower, upper, count)


def test_grid_refuses_candidates_that_collapse_to_the_same_float() -> None:
    with pytest.raises(InvalidPrivacyParameter, match="distinct"):
        candidate_grid(1.0, math.nextafter(1.0, 2.0), 3)


# --- parameters that would void the guarantee -----------------------------------------------------------


@pytest.mark.parametrize("epsilon", [0, 0.0, -1.0, math.inf, math.nan, True])
def test_epsilon_that_would_void_the_guarantee_is_refused(epsilon: float) -> None:
    with pytest.raises(InvalidPrivacyParameter, match="epsilon"):
        _mechanism(epsilon=epsilon)


@pytest.mark.parametrize("epsilon", [5e-324, 1e-300, 1e-12])
def test_an_epsilon_too_small_to_mean_anything_is_refused(epsilon: float) -> None:
    with pytest.raises(InvalidPrivacyParameter, match="epsilon"):
        _mechanism(epsilon=epsilon)


@pytest.mark.parametrize("max_contributions", [0, -1, True, 1.5, 2**63])
def test_max_contributions_must_be_a_sensible_positive_integer(max_contributions: int) -> None:
    with pytest.raises(InvalidPrivacyParameter, match="max_contributions"):
        _mechanism(max_contributions=max_contributions, epsilon=1e19)


@pytest.mark.parametrize("alpha", [0, 0.0, 1.0, -0.5, 1.5, math.nan, True, 1e-5, 0.99999])
def test_alpha_must_be_a_representable_fraction_strictly_inside_0_1(alpha: float) -> None:
    with pytest.raises(InvalidPrivacyParameter, match="alpha"):
        _mechanism(alpha=alpha)


@pytest.mark.parametrize("confidence", [0.0, 1.0, 1.5, -0.1, math.nan])
def test_confidence_must_be_a_probability(confidence: float) -> None:
    with pytest.raises(InvalidPrivacyParameter, match="confidence"):
        _mechanism(confidence=confidence)


@pytest.mark.parametrize(
    "candidates",
    [[], [1.0], [1.0, 1.0], [2.0, 1.0], [0.0, 2.0, 1.0], [0.0, math.nan], [0.0, math.inf], [False, True], ["a", "b"]],
)
def test_candidates_must_be_at_least_two_finite_strictly_increasing_numbers(candidates: list[float]) -> None:
    with pytest.raises(InvalidPrivacyParameter, match="candidates"):
        _mechanism(candidates=candidates)


# --- sensitivity and calibration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alpha", "max_contributions", "epsilon", "fraction"),
    [
        (0.5, 1, 1.0, Fraction(1, 2)),
        (0.5, 3, 0.5, Fraction(1, 2)),
        (0.9, 1, 1.0, Fraction(9, 10)),
        (0.1, 2, 0.3, Fraction(1, 10)),
        (0.25, 1, 0.7, Fraction(1, 4)),
        (0.123, 4, 2.0, Fraction(123, 1000)),
        (1 / 3, 1, 0.1, Fraction(1, 3)),
    ],
)
def test_sensitivity_scale_and_certified_epsilon(
    alpha: float, max_contributions: int, epsilon: float, fraction: Fraction
) -> None:
    mechanism = _mechanism(alpha=alpha, max_contributions=max_contributions, epsilon=epsilon)
    num, den = fraction.numerator, fraction.denominator
    expected_sensitivity = max_contributions * max(num, den - num)
    assert mechanism.alpha_fraction == fraction
    assert mechanism.alpha == float(fraction)
    assert mechanism.sensitivity == expected_sensitivity
    # Non-monotone scores: OpenDP charges epsilon = 2 * sensitivity / scale.
    assert mechanism.scale == pytest.approx(2 * expected_sensitivity / epsilon, rel=1e-12)
    assert mechanism.scale >= 2 * expected_sensitivity / epsilon
    assert mechanism.epsilon <= epsilon
    assert mechanism.epsilon == pytest.approx(epsilon, rel=1e-12)
    # Independently of the class: OpenDP's own map, at this scale and the true sensitivity, certifies the
    # charged epsilon, and a unit of sensitivity more would exceed the request (the scale is not padded).
    space = dp.vector_domain(dp.atom_domain(T="u64"), size=len(GRID)), dp.linf_distance(T="u64")
    check = dp.m.make_noisy_max(*space, dp.max_divergence(), scale=mechanism.scale, negate=True)
    assert check.map(expected_sensitivity) == mechanism.epsilon
    assert check.map(expected_sensitivity + 1) > epsilon


def test_the_mechanism_is_named_after_its_noise() -> None:
    assert _mechanism().name == MECHANISM_NOISY_MIN_EXPONENTIAL == "noisy_min_exponential"


def test_selection_probability_matches_the_declared_scale() -> None:
    """Two candidates whose scores differ by g: permute-and-flip picks the worse one with probability
    exactly exp(-g / scale) / 2. Here g = 2 and scale = 2, so p = exp(-1) / 2 = 0.184. A scale halved
    (privacy weakened) would give 0.068, doubled 0.303; over 4000 releases the standard error is 0.0061,
    so the 0.03 tolerance is about 5 standard errors (false alarm < 1e-6)."""
    mechanism = _mechanism(candidates=[0.0, 1.0], epsilon=1.0)
    assert mechanism.scale == 2.0
    # n = 100: candidate 0 has rank 50 (score |2*50 - 100| = 0), candidate 1 rank 51 (score 2).
    releases = 4000
    worse = sum(mechanism.release([50, 51], 100) == 1.0 for _ in range(releases)) / releases
    assert abs(worse - math.exp(-1.0) / 2) < 0.03


# --- utility ---------------------------------------------------------------------------------------------


def test_median_lands_on_the_true_median_with_generous_epsilon() -> None:
    values = _values(10_000)
    true_median = statistics.median(values)
    assert true_median == pytest.approx(25.0, abs=0.01)
    at_most = _at_most(values, GRID)
    mechanism = _mechanism(alpha=0.5, epsilon=1.0)
    # The best candidate's score is 2 and its neighbours' about 200: at scale 2 they are never chosen.
    released = {mechanism.release(at_most, len(values)) for _ in range(50)}
    assert all(abs(value - true_median) <= 1.0 for value in released)


def test_ninetieth_percentile_lands_near_the_true_one() -> None:
    values = _values(10_000)
    true_p90 = values[int(0.9 * len(values))]
    assert true_p90 == pytest.approx(81.0, abs=0.01)
    at_most = _at_most(values, GRID)
    mechanism = _mechanism(alpha=0.9, epsilon=1.0, max_contributions=2)
    released = {mechanism.release(at_most, len(values)) for _ in range(50)}
    assert all(abs(value - true_p90) <= 1.0 for value in released)
    # and the median mechanism on the same data would not have been anywhere near it
    assert abs(_mechanism(alpha=0.5).release(at_most, len(values)) - true_p90) > 40


def test_a_tiny_epsilon_spreads_the_choice() -> None:
    """At epsilon 0.01 (scale 200) with scores of at most 100, every candidate keeps a probability of at least
    exp(-0.5) / 11 = 0.055 per release. Over 400 releases: P(some candidate never chosen) <= 11 (1 - 0.055)^400
    < 1e-8, and the most frequent choice stays well under 0.5 (expected at most about 0.13)."""
    grid = candidate_grid(0.0, 100.0, 11)
    values = _values(100)
    at_most = _at_most(values, grid)
    mechanism = _mechanism(candidates=grid, epsilon=0.01)
    counts = Counter(mechanism.release(at_most, len(values)) for _ in range(400))
    assert set(counts) == set(grid)
    assert max(counts.values()) / 400 < 0.5


def _rank_error(mechanism: QuantileMechanism, at_most: list[int], total: int, value: float) -> tuple[float, float]:
    """(rank error of the released value, the best rank error any candidate could have had)."""
    target = mechanism.alpha * total
    best = min(abs(count - target) for count in at_most)
    return abs(at_most[mechanism.candidates.index(value)] - target), best


def test_rank_half_width_covers_realistic_releases() -> None:
    """Noise is large relative to the grid spacing here (scale 8 in score units, ~40 rows per candidate)."""
    grid = candidate_grid(0.0, 100.0, 51)
    values = _values(2000)
    at_most = _at_most(values, grid)
    mechanism = _mechanism(candidates=grid, alpha=0.5, max_contributions=2, epsilon=0.5, confidence=0.95)
    assert mechanism.rank_half_width == pytest.approx(8 * math.log(50 / 0.05) / 2)
    releases = 1000
    covered = 0
    for _ in range(releases):
        error, best = _rank_error(mechanism, at_most, len(values), mechanism.release(at_most, len(values)))
        covered += error <= best + mechanism.rank_half_width
    # standard error of the share at 0.95 is 0.007: 0.92 is more than 4 standard errors below the claim,
    # and the claim is conservative (the union bound), so the true coverage is higher still.
    assert covered / releases >= 0.92


def test_rank_half_width_is_nearly_tight_in_the_worst_case() -> None:
    """Adversarial scores: one candidate exactly on target, the ten others all just beyond the half-width.
    The half-width must still cover at least ``confidence`` of the releases, and it must not be vacuous:
    permute-and-flip misses here with probability about 0.22 (Gumbel selection about 0.33) against the
    allowed 0.5. With 2000 releases the standard error is below 0.012, so both margins exceed 5 of them."""
    candidates = candidate_grid(0.0, 10.0, 11)
    mechanism = _mechanism(candidates=candidates, epsilon=1.0, confidence=0.5)
    # scale 2, den 2: half-width = 2 * ln(10 / 0.5) / 2 = ln 20 = 3.0
    assert mechanism.rank_half_width == pytest.approx(math.log(20))
    total = 1000
    beyond = math.floor(mechanism.rank_half_width) + 1
    at_most = [total // 2 - beyond] * 10 + [total // 2]
    releases = 2000
    missed = 0
    for _ in range(releases):
        error, best = _rank_error(mechanism, at_most, total, mechanism.release(at_most, total))
        assert best == 0
        missed += error > best + mechanism.rank_half_width
    assert missed / releases <= 1 - mechanism.confidence
    assert missed / releases >= 0.1


# --- input validation in release -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at_most", "total", "match"),
    [
        ([1, 2], 3, "expected 3"),
        ([1, 2, 3, 4], 4, "expected 3"),
        ([1, 2.0, 3], 3, "integer"),
        ([1, "2", 3], 3, "integer"),
        ([True, 1, 1], 3, "integer"),
        ([-1, 0, 1], 3, "between 0 and total"),
        ([0, 1, 4], 3, "between 0 and total"),
        ([2, 1, 3], 3, "non-decreasing"),
        ([0, 0, 0], -1, "total"),
        ([0, 0, 0], 2.5, "total"),
        ([0, 0, 0], 2**64, "too large"),
    ],
)
def test_release_refuses_malformed_counts(at_most: list[int], total: int, match: str) -> None:
    mechanism = _mechanism(candidates=[0.0, 1.0, 2.0])
    with pytest.raises(InvalidPrivacyParameter, match=match):
        mechanism.release(at_most, total)


def test_refusals_never_repeat_the_private_counts() -> None:
    mechanism = _mechanism(candidates=[0.0, 1.0, 2.0])
    for at_most, total in (([0, 987_654, 5], 123_456), ([7_777, 6_666, 9_999], 9_999)):
        with pytest.raises(InvalidPrivacyParameter) as caught:
            mechanism.release(at_most, total)
        assert not any(str(number) in caught.value.message for number in (*at_most, total) if number > 9)


def test_release_returns_one_of_the_candidates() -> None:
    mechanism = _mechanism(candidates=[-1.5, 0.0, 2.5])
    assert mechanism.release([0, 0, 0], 0) in (-1.5, 0.0, 2.5)
    assert isinstance(mechanism.release([1, 2, 3], 3), float)
