"""The count mechanism: parameters that would void the guarantee are refused, and the noise is real."""

from __future__ import annotations

import math
import statistics

import pytest

import anonymization
from anonymization import CountMechanism, InvalidPrivacyParameter


def test_public_names_are_exactly_the_documented_ones() -> None:
    assert set(anonymization.__all__) == {
        "MECHANISM_DISCRETE_LAPLACE",
        "MECHANISM_NOISY_MIN_EXPONENTIAL",
        "QuantileMechanism",
        "candidate_grid",
        "AnonymizationError",
        "CountMechanism",
        "InvalidPrivacyParameter",
        "NoisyCounts",
        "MECHANISM_LAPLACE_THRESHOLD",
        "KeySelection",
        "SelectedKeys",
        "PSEUDONYM_LENGTH",
        "MasterSecret",
        "PseudonymBatch",
        "Pseudonymiser",
        "Rule",
        "derive_key",
        "fingerprint_of",
        "small_classes",
    }
    for name in anonymization.__all__:
        assert hasattr(anonymization, name)


@pytest.mark.parametrize("epsilon", [0, 0.0, -1.0, math.inf, math.nan])
def test_epsilon_that_would_void_the_guarantee_is_refused(epsilon: float) -> None:
    with pytest.raises(InvalidPrivacyParameter, match="epsilon"):
        CountMechanism(l1_sensitivity=1, epsilon=epsilon)


@pytest.mark.parametrize("sensitivity", [0, -1, True])
def test_sensitivity_must_be_a_positive_integer(sensitivity: int) -> None:
    with pytest.raises(InvalidPrivacyParameter, match="l1_sensitivity"):
        CountMechanism(l1_sensitivity=sensitivity, epsilon=1.0)


@pytest.mark.parametrize("confidence", [0.0, 1.0, 1.5])
def test_confidence_must_be_a_probability(confidence: float) -> None:
    with pytest.raises(InvalidPrivacyParameter, match="confidence"):
        CountMechanism(l1_sensitivity=1, epsilon=1.0, confidence=confidence)


def test_empty_release_is_refused() -> None:
    with pytest.raises(InvalidPrivacyParameter):
        CountMechanism(l1_sensitivity=1, epsilon=1.0).release([])


@pytest.mark.parametrize(("sensitivity", "epsilon"), [(1, 1.0), (1, 0.3), (3, 0.5), (2, 2.0), (1, 0.1), (7, 0.7)])
def test_scale_and_certified_epsilon_follow_the_laplace_calibration(sensitivity: int, epsilon: float) -> None:
    mechanism = CountMechanism(l1_sensitivity=sensitivity, epsilon=epsilon)
    assert mechanism.scale == pytest.approx(sensitivity / epsilon, rel=1e-12)
    assert mechanism.scale >= sensitivity / epsilon
    # OpenDP's privacy map is the authority: what it certifies is charged, and it never exceeds the request.
    assert mechanism.epsilon <= epsilon
    assert mechanism.epsilon == pytest.approx(epsilon, rel=1e-12)


@pytest.mark.parametrize("epsilon", [5e-324, 1e-300, 1e-16])
def test_an_epsilon_too_small_to_mean_anything_is_refused(epsilon: float) -> None:
    with pytest.raises(InvalidPrivacyParameter, match="too small"):
        CountMechanism(l1_sensitivity=1, epsilon=epsilon)


def test_noise_has_the_calibrated_spread() -> None:
    """Fails if the noise were removed or scaled down: E|X| of (discrete) Laplace(b) is close to b."""
    mechanism = CountMechanism(l1_sensitivity=1, epsilon=0.1)  # scale 10
    draws = [value - 1000 for value in mechanism.release([1000] * 4000).values]
    mean_abs = statistics.fmean(abs(d) for d in draws)
    assert 9.0 < mean_abs < 11.0
    assert abs(statistics.fmean(draws)) < 1.0  # unbiased


def test_half_width_covers_the_stated_share_of_draws() -> None:
    mechanism = CountMechanism(l1_sensitivity=2, epsilon=0.5, confidence=0.95)
    draws = mechanism.release([500] * 5000).values
    inside = sum(abs(value - 500) <= mechanism.half_width for value in draws) / len(draws)
    assert 0.93 <= inside <= 0.975


def test_releases_are_integers_of_the_same_length() -> None:
    released = CountMechanism(l1_sensitivity=1, epsilon=1.0).release([3, 0, 7])
    assert len(released.values) == 3
    assert all(isinstance(value, int) for value in released.values)


@pytest.mark.parametrize(("sensitivity", "half_width"), [(1, 50.0), (1, 6.43), (3, 100.0), (250_000, 1_000_000.0)])
def test_asking_for_accuracy_gives_the_epsilon_that_delivers_it(sensitivity: int, half_width: float) -> None:
    epsilon = CountMechanism.epsilon_for_half_width(l1_sensitivity=sensitivity, half_width=half_width)
    mechanism = CountMechanism(l1_sensitivity=sensitivity, epsilon=epsilon)
    assert mechanism.half_width == pytest.approx(half_width, rel=1e-6)
    # A tighter target costs more epsilon: the inverse is monotone.
    assert CountMechanism.epsilon_for_half_width(l1_sensitivity=sensitivity, half_width=half_width / 2) > epsilon


@pytest.mark.parametrize("half_width", [0.0, -1.0, math.inf, math.nan])
def test_accuracy_targets_must_be_positive(half_width: float) -> None:
    with pytest.raises(InvalidPrivacyParameter, match="half_width"):
        CountMechanism.epsilon_for_half_width(l1_sensitivity=1, half_width=half_width)
