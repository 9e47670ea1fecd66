"""Partition selection: the threshold is the smallest that meets delta, and small groups stay out."""

from __future__ import annotations

import math

import pytest

from anonymization import InvalidPrivacyParameter, KeySelection
from anonymization._selection import _privacy


@pytest.mark.parametrize("delta", [0, 0.0, -1e-9, 1.0, 2.0, math.nan, True])
def test_a_delta_that_would_void_the_guarantee_is_refused(delta: float) -> None:
    with pytest.raises(InvalidPrivacyParameter, match="delta"):
        KeySelection(max_contributions=1, epsilon=1.0, delta=delta)


@pytest.mark.parametrize("epsilon", [0, -1.0, math.inf, math.nan])
def test_an_epsilon_that_would_void_the_guarantee_is_refused(epsilon: float) -> None:
    with pytest.raises(InvalidPrivacyParameter, match="epsilon"):
        KeySelection(max_contributions=1, epsilon=epsilon, delta=1e-9)


@pytest.mark.parametrize("max_contributions", [0, -2, True])
def test_max_contributions_must_be_a_positive_integer(max_contributions: int) -> None:
    with pytest.raises(InvalidPrivacyParameter, match="max_contributions"):
        KeySelection(max_contributions=max_contributions, epsilon=1.0, delta=1e-9)


@pytest.mark.parametrize(
    ("max_contributions", "epsilon", "delta"), [(1, 0.25, 1e-9), (3, 0.5, 1e-7), (1, 2.0, 1e-12), (10, 1.0, 1e-6)]
)
def test_the_threshold_is_the_smallest_that_opendp_certifies_for_delta(
    max_contributions: int, epsilon: float, delta: float
) -> None:
    selection = KeySelection(max_contributions=max_contributions, epsilon=epsilon, delta=delta)
    assert selection.epsilon <= epsilon
    assert selection.delta <= delta
    assert selection.scale >= max_contributions / epsilon  # no less noise than the sensitivity needs
    # One lower and delta would be exceeded: the threshold is not padded, and would fail this test if
    # it were lowered.
    if selection.threshold - 1 > max_contributions:
        assert _privacy(selection.scale, selection.threshold - 1, max_contributions)[1] > delta
    assert selection.threshold > max_contributions  # a lone unit can never pass on its own rows


@pytest.mark.parametrize(("max_contributions", "epsilon", "delta"), [(1, 1.0, 0.01), (2, 2.0, 0.005)])
def test_lone_units_pass_no_more_often_than_the_certified_delta(
    max_contributions: int, epsilon: float, delta: float
) -> None:
    """The empirical rate at which a key holding one unit's rows passes is what delta must bound.
    OpenDP 0.16's map misses the mass exactly at the threshold (about e^(epsilon / m) too small); a
    calibration that trusted it would fail here. 40,000 lone keys: the bound is mean + 6 sigma."""
    selection = KeySelection(max_contributions=max_contributions, epsilon=epsilon, delta=delta)
    keys = 40_000
    passed = len(selection.release({str(index): max_contributions for index in range(keys)}).counts)
    mean = keys * selection.delta
    assert passed <= mean + 6 * math.sqrt(mean)
    if max_contributions == 1:  # then delta is exactly this rate: not wildly conservative either
        assert passed >= mean / 4


def test_more_contributions_per_unit_need_a_higher_threshold() -> None:
    one = KeySelection(max_contributions=1, epsilon=0.5, delta=1e-9)
    three = KeySelection(max_contributions=3, epsilon=0.5, delta=1e-9)
    assert three.threshold > one.threshold
    assert three.scale == pytest.approx(3 * one.scale)


def test_a_lone_unit_is_almost_never_released_and_a_large_group_always() -> None:
    """With delta = 1e-3 a group of one unit passes about once in a thousand releases; 3,000 releases
    pass it more than 25 times with probability below 1e-9. A weakened threshold (or none) fails this."""
    selection = KeySelection(max_contributions=2, epsilon=1.0, delta=1e-3)
    lone_passes = 0
    large_passes = 0
    for _ in range(3_000):
        released = selection.release({"lone": 2, "large": selection.reliable_count + 40})
        lone_passes += "lone" in released.counts
        large_passes += "large" in released.counts
    assert lone_passes <= 25
    assert large_passes == 3_000


def test_released_counts_are_noisy_and_centred_on_the_truth() -> None:
    selection = KeySelection(max_contributions=1, epsilon=1.0, delta=1e-9)
    exact = selection.threshold + 200
    draws = [selection.release({"k": exact}).counts["k"] for _ in range(2_000)]
    assert len(set(draws)) > 5  # noise was added
    mean = sum(draws) / len(draws)
    # Standard deviation of the mean: scale * sqrt(2) / sqrt(2000) ~ 0.03; 0.5 is 15 of them.
    assert abs(mean - exact) < 0.5


def test_negative_counts_are_refused_and_an_empty_map_releases_nothing() -> None:
    selection = KeySelection(max_contributions=1, epsilon=1.0, delta=1e-9)
    with pytest.raises(InvalidPrivacyParameter, match="negative"):
        selection.release({"k": -1})
    assert selection.release({}).counts == {}
