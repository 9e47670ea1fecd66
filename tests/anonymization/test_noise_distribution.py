"""The count mechanism's noise has exactly the declared discrete Laplace scale: a test with a proven
false-alarm probability below one in a million, and the power to catch noise at half the scale.

OpenDP's noise cannot be seeded, so the test cannot pin draws; it pins their distribution instead.

Parameterisation. OpenDP samples the discrete Laplace of CKS20 (``make_laplace`` on integers: "internally,
all sampling is done using the discrete Laplace distribution"); its proof document defines
``P[X = k] = (e^{1/s} - 1) / (e^{1/s} + 1) * e^{-|k|/s}``, i.e. ``P[X = k] ∝ q^{|k|}`` with ``q = e^{-1/s}``.
The installed package does not print that formula, so :func:`test_parameterisation_matches_opendps_accuracy`
checks it against a function the installed package does ship, ``discrete_laplacian_scale_to_accuracy``.

Acceptance region. From N = 20,000 independent draws (OpenDP noises each coordinate of the vector
independently) the test takes the sample means of ``|X|`` and of ``X``. Rather than a normal approximation
(whose error at five standard errors is not controlled by Berry-Esseen at this N) it uses the Chernoff bound,
valid for every N: ``P(mean >= a) <= exp(-N (λ a - Λ(λ)))`` for any ``λ > 0`` (and ``<= a`` for ``λ < 0``),
with ``Λ`` the exact log moment generating function of the declared distribution. Each interval end is the
best such bound over a grid of ``λ`` (any ``λ`` gives a valid bound, so the grid only costs a little width)
set to ``exp(-L)``. The file checks 2 scales x 2 statistics x 2 sides = 8 tail events, so with
``exp(-L) = 1e-6 / 8`` the union bound puts the chance that this file ever fails on correct noise below one
in a million. (The resulting half-widths come out between 5.5 and 5.8 standard errors, about what a
normal-theory z of sqrt(2 L) = 5.64 would give, but without relying on the normal approximation.)
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable

import pytest
from opendp.accuracy import discrete_laplacian_scale_to_accuracy

from anonymization import CountMechanism

DRAWS = 20_000
TAIL_EVENTS = 8  # 2 scales x 2 statistics (mean |X|, mean X) x 2 sides
FALSE_ALARM = 1e-6
LOG_INVERSE_TAIL = math.log(TAIL_EVENTS / FALSE_ALARM)  # each tail event gets probability <= 1e-6 / 8

LogMgf = Callable[[float], float]


def _pmf(scale: float) -> list[float]:
    """P(|X| = m) for m = 0, 1, ...; the neglected tail is below 1e-25 of the mass."""
    q = math.exp(-1.0 / scale)
    norm = (1.0 - q) / (1.0 + q)
    terms = math.ceil(60 * scale) + 60
    return [norm] + [2.0 * norm * q**m for m in range(1, terms)]


def _moments(scale: float) -> tuple[float, float, float]:
    """(E|X|, Var|X|, Var X) of the discrete Laplace, by summing the series (E X = 0 by symmetry)."""
    pmf = _pmf(scale)
    assert math.fsum(pmf) == pytest.approx(1.0, abs=1e-15)
    mean_abs = math.fsum(m * p for m, p in enumerate(pmf))
    second = math.fsum(m * m * p for m, p in enumerate(pmf))  # E X^2 = E |X|^2
    return mean_abs, second - mean_abs**2, second


def _log_mgf_abs(scale: float) -> LogMgf:
    """log E exp(λ|X|) = log[(1 - q)(1 + r) / ((1 + q)(1 - r))] with r = q e^λ, for λ < 1/scale."""
    q = math.exp(-1.0 / scale)

    def log_mgf(lam: float) -> float:
        r = q * math.exp(lam)
        return math.log((1.0 - q) * (1.0 + r) / ((1.0 + q) * (1.0 - r)))

    return log_mgf


def _log_mgf_signed(scale: float) -> LogMgf:
    """log E exp(λX) = log[(1 - q)/(1 + q) (1 + r+/(1 - r+) + r-/(1 - r-))], r± = q e^{±λ}, |λ| < 1/scale."""
    q = math.exp(-1.0 / scale)

    def log_mgf(lam: float) -> float:
        up, down = q * math.exp(lam), q * math.exp(-lam)
        return math.log((1.0 - q) / (1.0 + q) * (1.0 + up / (1.0 - up) + down / (1.0 - down)))

    return log_mgf


def _lambdas(scale: float) -> list[float]:
    """A geometric grid on (0, 1/scale), where both moment generating functions are finite."""
    steps = 2000
    return [math.exp(math.log(1e-6) + (math.log(0.999) - math.log(1e-6)) * j / steps) / scale for j in range(steps)]


def _upper_end(log_mgf: LogMgf, lambdas: list[float], budget: float) -> float:
    """Smallest a with P(mean of DRAWS >= a) <= exp(-DRAWS * budget), by the Chernoff bound."""
    return min((log_mgf(lam) + budget) / lam for lam in lambdas)


def _lower_end(log_mgf: LogMgf, lambdas: list[float], budget: float) -> float:
    """Largest a with P(mean of DRAWS <= a) <= exp(-DRAWS * budget), by the Chernoff bound (λ < 0)."""
    return max((log_mgf(-lam) + budget) / -lam for lam in lambdas)


def _chernoff_upper_tail(log_mgf: LogMgf, lambdas: list[float], a: float) -> float:
    """A bound on P(mean of DRAWS >= a) for draws with the given log-MGF."""
    return math.exp(-DRAWS * max(lam * a - log_mgf(lam) for lam in lambdas))


@pytest.mark.parametrize("scale", [2.0, 10.0])
def test_series_moments_match_the_closed_forms(scale: float) -> None:
    """Guards the arithmetic the acceptance region rests on: series sums against closed forms."""
    q = math.exp(-1.0 / scale)
    mean_abs, var_abs, var_signed = _moments(scale)
    assert mean_abs == pytest.approx(2 * q / (1 - q**2), rel=1e-12)
    assert var_signed == pytest.approx(2 * q / (1 - q) ** 2, rel=1e-12)
    assert var_abs == pytest.approx(var_signed - mean_abs**2, rel=1e-12)
    pmf = _pmf(scale)
    for lam in (-0.5 / scale, 0.1 / scale, 0.5 / scale):
        series = math.fsum(p * math.exp(lam * m) for m, p in enumerate(pmf))
        assert _log_mgf_abs(scale)(lam) == pytest.approx(math.log(series), rel=1e-9)
        signed = math.fsum(p * math.cosh(lam * m) for m, p in enumerate(pmf))  # symmetric: E e^{λX} = E cosh(λ|X|)
        assert _log_mgf_signed(scale)(lam) == pytest.approx(math.log(signed), rel=1e-9)


@pytest.mark.parametrize("scale", [2.0, 10.0, 0.7])
def test_parameterisation_matches_opendps_accuracy(scale: float) -> None:
    """Under P(X = k) ∝ exp(-|k|/scale), P(|X| >= m) = 2 q^m / (1 + q); OpenDP's own accuracy function must
    then return exactly m at that significance level (it would not under another parameterisation, e.g.
    P ∝ exp(-|k|/(2 scale)) or one where scale is the standard deviation)."""
    pmf = _pmf(scale)
    for m in (1, 3, 10):
        alpha = math.fsum(pmf[m:])
        assert discrete_laplacian_scale_to_accuracy(scale, alpha) == pytest.approx(m, rel=1e-9)


@pytest.mark.parametrize("epsilon", [0.5, 0.1])
def test_count_noise_has_exactly_the_declared_scale(epsilon: float) -> None:
    mechanism = CountMechanism(l1_sensitivity=1, epsilon=epsilon)
    scale = mechanism.scale
    assert scale == pytest.approx(1 / epsilon, rel=1e-12)
    lambdas = _lambdas(scale)
    budget = LOG_INVERSE_TAIL / DRAWS

    mean_abs, var_abs, var_signed = _moments(scale)
    abs_mgf, signed_mgf = _log_mgf_abs(scale), _log_mgf_signed(scale)
    abs_low, abs_high = _lower_end(abs_mgf, lambdas, budget), _upper_end(abs_mgf, lambdas, budget)
    signed_low, signed_high = _lower_end(signed_mgf, lambdas, budget), _upper_end(signed_mgf, lambdas, budget)

    # The region is sound (it contains the exact values) and tight (5.5 to 5.8 standard errors, no more).
    abs_se, signed_se = math.sqrt(var_abs / DRAWS), math.sqrt(var_signed / DRAWS)
    assert abs_low < mean_abs < abs_high
    assert 5.0 * abs_se < mean_abs - abs_low < abs_high - mean_abs < 6.5 * abs_se
    assert 5.0 * signed_se < signed_high < 6.5 * signed_se
    assert signed_low == pytest.approx(-signed_high, rel=1e-9)

    draws = mechanism.release([0] * DRAWS).values
    assert len(draws) == DRAWS
    observed_abs = statistics.fmean(abs(d) for d in draws)
    observed_signed = statistics.fmean(draws)
    assert abs_low <= observed_abs <= abs_high, (observed_abs, abs_low, abs_high)
    assert signed_low <= observed_signed <= signed_high, (observed_signed, signed_low, signed_high)

    # Power: noise at half the declared scale (epsilon doubled behind the ledger's back) is caught. Its exact
    # mean |X| lies outside the acceptance interval, and the Chernoff bound under that distribution puts its
    # chance of reaching the interval below one in a million.
    half_mean_abs, _, _ = _moments(scale / 2)
    assert half_mean_abs < abs_low
    assert _chernoff_upper_tail(_log_mgf_abs(scale / 2), _lambdas(scale / 2), abs_low) < FALSE_ALARM
    # ...and so is noise at 1.5 times the scale (the declared accuracy would be a lie).
    wide_mean_abs, _, _ = _moments(1.5 * scale)
    assert wide_mean_abs > abs_high
