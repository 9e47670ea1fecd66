"""Private release of a quantile (e.g. the median) by noisy selection over a public grid of candidates.

The data source does the counting (pushed down): for a fixed, public grid of candidate values
``c_0 < c_1 < ... < c_{K-1}`` it returns the cumulative counts ``at_most[i] = #(values <= c_i)`` and the
total ``n``, after limiting each privacy unit to ``max_contributions`` rows and clamping values to the
catalog's bounds. No raw value reaches Python; this module only scores the candidates and lets an OpenDP
measurement pick one.

Scoring. With the quantile ``alpha`` written as ``num/den`` (denominator at most 1000), candidate ``i``
scores ``|den * at_most[i] - num * n|``, i.e. ``den`` times the distance between its rank and the target rank
``alpha * n``; the lowest score is best. Adding or removing one row moves every ``at_most[i]`` by at most 1
and ``n`` by exactly 1 (in the same direction), so each score moves by at most ``max(num, den - num)``; one
privacy unit contributes at most ``max_contributions`` rows, hence the L-infinity sensitivity of the score
vector is ``max_contributions * max(num, den - num)``.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Sequence
from fractions import Fraction
from typing import SupportsIndex

import opendp.prelude as dp

from anonymization._calibration import calibrate, check_epsilon
from anonymization.errors import InvalidPrivacyParameter

# The selection measurement is one of OpenDP's "contrib" constructors.
dp.enable_features("contrib")

MECHANISM_NOISY_MIN_EXPONENTIAL = "noisy_min_exponential"
"""Report-noisy-min with exponential noise, i.e. permute-and-flip (MS20): OpenDP's ``make_noisy_max``
under ``max_divergence`` with ``negate=True``."""

_MAX_DENOMINATOR = 1000
# The scores are released through OpenDP as u64; ``den * n`` must fit.
_SCORE_TYPE = "u64"
_MAX_SCORE = 2**64 - 1
# The scores are not monotone (they are absolute values), so OpenDP's privacy map works with the range
# distance, which is at most twice the L-infinity distance: epsilon = 2 * sensitivity / scale.
_RANGE_FACTOR = 2
# Beyond this the noise dwarfs any score a u64 can hold; such an epsilon is a mistake, not a request.
_MAX_SCALE = 1e12


def candidate_grid(lower: float, upper: float, count: int) -> tuple[float, ...]:
    """``count`` evenly spaced candidates from ``lower`` to ``upper``, both included.

    The grid is public: it must depend only on the catalog's declared bounds (and a configured count),
    never on the data. A grid derived from the data would itself leak, and would void the guarantee of
    :class:`QuantileMechanism`, whose analysis treats the candidates as fixed in advance.
    """
    for label, bound in (("lower", lower), ("upper", upper)):
        if isinstance(bound, bool) or not isinstance(bound, int | float) or not math.isfinite(bound):
            raise InvalidPrivacyParameter(f"the candidate grid's {label} bound must be a finite number, got {bound!r}")
    if not lower < upper:
        raise InvalidPrivacyParameter(f"the candidate grid needs lower < upper, got {lower!r} and {upper!r}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 2:
        raise InvalidPrivacyParameter(f"the candidate grid needs an integer count >= 2, got {count!r}")
    last = count - 1
    # Interpolating (rather than lower + i * step) keeps both endpoints exact and cannot overflow.
    grid = tuple(float(lower) * ((last - i) / last) + float(upper) * (i / last) for i in range(count))
    if any(a >= b for a, b in itertools.pairwise(grid)):
        raise InvalidPrivacyParameter(f"{count} candidates between {lower!r} and {upper!r} are not distinct floats")
    return grid


def _check_candidates(candidates: Sequence[float]) -> tuple[float, ...]:
    values = tuple(candidates)
    if len(values) < 2:
        raise InvalidPrivacyParameter(f"there must be at least 2 candidates, got {len(values)}")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidPrivacyParameter(f"candidates must be finite numbers, got {value!r}")
    if any(a >= b for a, b in itertools.pairwise(values)):
        raise InvalidPrivacyParameter("candidates must be strictly increasing")
    return tuple(float(v) for v in values)


def _check_alpha(alpha: float) -> Fraction:
    if isinstance(alpha, bool) or not (isinstance(alpha, int | float) and math.isfinite(alpha) and 0 < alpha < 1):
        raise InvalidPrivacyParameter(f"alpha must lie strictly between 0 and 1, got {alpha!r}")
    fraction = Fraction(alpha).limit_denominator(_MAX_DENOMINATOR)
    if not 0 < fraction < 1:
        raise InvalidPrivacyParameter(
            f"alpha {alpha!r} is too close to 0 or 1 to be written as a fraction with denominator <= {_MAX_DENOMINATOR}"
        )
    return fraction


def _make_measurement(size: int, scale: float) -> dp.Measurement:
    domain = dp.vector_domain(dp.atom_domain(T=_SCORE_TYPE), size=size)
    metric = dp.linf_distance(T=_SCORE_TYPE, monotonic=False)
    return dp.m.make_noisy_max(domain, metric, dp.max_divergence(), scale=scale, negate=True)


def _as_count(value: object, label: str) -> int:
    # Any integer type (also e.g. numpy's) passes; floats, strings and bools do not.
    if isinstance(value, bool) or not isinstance(value, SupportsIndex):
        raise InvalidPrivacyParameter(f"{label} must be an integer count")
    return operator.index(value)


class QuantileMechanism:
    """Private selection of the grid candidate whose rank is closest to ``alpha * n``.

    Built before any data is touched: the candidates, ``alpha``, ``max_contributions`` and ``epsilon`` fix
    the sensitivity, the noise scale and the certified epsilon.

    Guarantee: each :meth:`release` is ``epsilon``-DP (pure DP, ``self.epsilon`` as certified by OpenDP's
    privacy map, never above the request) with respect to adding or removing one privacy unit, provided
    that ``at_most``/``total`` are the exact cumulative counts of data in which each unit contributes at
    most ``max_contributions`` rows, and that the candidates are public (fixed without looking at the data,
    e.g. by :func:`candidate_grid` from the catalog's bounds). Clamping values to ``[lower, upper]`` before
    counting is the source's job; it does not affect privacy, only which candidate is best.

    The selection is OpenDP's ``make_noisy_max`` (``negate=True``, ``max_divergence``) over the u64 score
    vector with the L-infinity distance (non-monotonic); in OpenDP this is permute-and-flip, equivalent to
    report-noisy-min with exponential noise. Its map is ``epsilon = 2 * sensitivity / scale``, so the scale
    starts at ``2 * sensitivity / epsilon`` and is nudged up by the last floating-point digit until the map
    certifies at most ``epsilon``.

    Accuracy (``rank_half_width``): with probability at least ``confidence``, the released candidate's rank
    ``at_most[i]`` is within ``min_j |at_most[j] - alpha * n| + rank_half_width`` of the target rank
    ``alpha * n``. The first term is the grid's own discretisation error (data-dependent: ties or a coarse
    grid can keep every candidate far from the target); the second is the mechanism's. Derivation: let
    ``g_i >= 0`` be candidate ``i``'s score minus the lowest score and ``s`` the scale. Permute-and-flip
    examines each candidate at most once and accepts it with probability ``exp(-g_i / s)``, so
    ``P(release i) <= exp(-g_i / s)`` (the same holds for the Gumbel / exponential mechanism, whose
    normaliser contains the best candidate's weight 1). At least one candidate has ``g = 0``, so a union
    bound over the other ``K - 1`` gives ``P(g_released >= t) <= (K - 1) exp(-t / s)``, which is
    ``1 - confidence`` for ``t = s * ln((K - 1) / (1 - confidence))``. Scores are ``den`` times rank
    distances, so ``rank_half_width = t / den`` (about ``2 * max_contributions * max(alpha, 1 - alpha) *
    ln((K - 1) / (1 - confidence)) / epsilon``). The bound is conservative (the union bound), not tight.
    """

    name = MECHANISM_NOISY_MIN_EXPONENTIAL

    def __init__(
        self,
        *,
        candidates: Sequence[float],
        alpha: float,
        max_contributions: int,
        epsilon: float,
        confidence: float = 0.95,
    ) -> None:
        check_epsilon(epsilon)
        if isinstance(max_contributions, bool) or not isinstance(max_contributions, int) or max_contributions < 1:
            raise InvalidPrivacyParameter(f"max_contributions must be an integer >= 1, got {max_contributions!r}")
        if isinstance(confidence, bool) or not (isinstance(confidence, int | float) and 0 < confidence < 1):
            raise InvalidPrivacyParameter(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
        values = _check_candidates(candidates)
        fraction = _check_alpha(alpha)
        num, den = fraction.numerator, fraction.denominator
        sensitivity = max_contributions * max(num, den - num)
        if _RANGE_FACTOR * sensitivity > _MAX_SCORE:
            raise InvalidPrivacyParameter(
                f"max_contributions {max_contributions!r} is too large: the score sensitivity overflows u64"
            )
        measurement, scale, certified = calibrate(
            lambda candidate_scale: _make_measurement(len(values), candidate_scale),
            d_in=sensitivity,
            epsilon=epsilon,
            scale=_RANGE_FACTOR * sensitivity / epsilon,
            max_scale=_MAX_SCALE,
        )

        self.candidates: tuple[float, ...] = values
        self.alpha: float = float(fraction)
        """The quantile actually targeted: the request written as ``num/den`` with ``den <= 1000``."""
        self.alpha_fraction: Fraction = fraction
        self.max_contributions: int = max_contributions
        self.sensitivity: int = sensitivity
        """L-infinity sensitivity of the score vector: ``max_contributions * max(num, den - num)``."""
        self.scale: float = scale
        self.epsilon: float = certified
        self.confidence: float = float(confidence)
        self._measurement = measurement
        tail = scale * math.log((len(values) - 1) / (1.0 - confidence)) / den
        # One ulp up so that floating-point rounding cannot make the bound claim more than it proves.
        self.rank_half_width: float = math.nextafter(tail, math.inf)
        """See the class docstring: the rank error beyond the best candidate's, at ``confidence``."""

    def release(self, at_most: Sequence[int], total: int) -> float:
        """The chosen candidate for the cumulative counts ``at_most`` (one per candidate) out of ``total``.

        The inputs are exact private counts: error messages never repeat them. For a correct source the
        checks below never fail, so refusing malformed input reveals nothing about correct data.
        """
        n = _as_count(total, "total")
        if n < 0:
            raise InvalidPrivacyParameter("total must be >= 0")
        if len(at_most) != len(self.candidates):
            raise InvalidPrivacyParameter(
                f"expected {len(self.candidates)} cumulative counts (one per candidate), got {len(at_most)}"
            )
        counts = [_as_count(value, "each cumulative count") for value in at_most]
        if any(not 0 <= count <= n for count in counts):
            raise InvalidPrivacyParameter("cumulative counts must lie between 0 and total")
        if any(a > b for a, b in itertools.pairwise(counts)):
            raise InvalidPrivacyParameter("cumulative counts must be non-decreasing")
        num, den = self.alpha_fraction.numerator, self.alpha_fraction.denominator
        if den * n > _MAX_SCORE:
            raise InvalidPrivacyParameter("total is too large for the score type")
        scores = [abs(den * count - num * n) for count in counts]
        index = int(self._measurement(scores))
        return self.candidates[index]
