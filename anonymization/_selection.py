"""Releasing group keys that the catalog does not list: DP partition selection by a noisy threshold.

Where a grouping column has no public keys, the set of groups present in the data is itself private: a
group with one member reveals that member. The data source returns, per group present, the number of
rows left after each privacy unit was limited to ``max_contributions`` rows; this module releases only
the groups whose count, plus discrete Laplace noise, reaches a threshold (OpenDP's
``make_laplace_threshold``, Rogers 2023). A group too small to pass is absent from the answer; the
probability that a group present because of one single unit passes is what ``delta`` bounds.

Sensitivity. Adding or removing one unit changes at most ``max_contributions`` groups (l0), each by at
most ``max_contributions`` rows (l-infinity), and all of them together by at most ``max_contributions``
rows (l1). OpenDP's privacy map takes exactly that triple.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import opendp.prelude as dp
from opendp.accuracy import discrete_laplacian_scale_to_accuracy

from anonymization._calibration import check_epsilon, drawn_scale
from anonymization.errors import InvalidPrivacyParameter

dp.enable_features("contrib")

MECHANISM_LAPLACE_THRESHOLD = "laplace_threshold"
_MAX_SCALE = 1e15
_MAX_THRESHOLD = 2**62
_MAX_NUDGES = 64


def _measurement(scale: float, threshold: int) -> dp.Measurement:
    return dp.m.make_laplace_threshold(
        dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T=dp.i64)),
        dp.l01inf_distance(dp.absolute_distance(T=dp.i64)),
        scale=scale,
        threshold=threshold,
    )


def _map(scale: float, threshold: int, max_contributions: int) -> tuple[float, float]:
    m = max_contributions
    epsilon, delta = _measurement(scale, threshold).map((m, m, m))  # type: ignore[no-untyped-call]
    return float(epsilon), float(delta)


def _privacy(scale: float, threshold: int, max_contributions: int) -> tuple[float, float]:
    """(epsilon, delta) of releasing keys whose noisy count is at least ``threshold``.

    OpenDP 0.16's map for ``make_laplace_threshold`` leaves out the probability of landing exactly on
    the threshold, although the measurement releases such a key (opendp/opendp#2922; measured here:
    a lone key passes threshold 4 at scale 1 in 3.7% of releases, where the map at 4 says 1.3% and
    the map at 3 says 3.6%). So the delta certified for ``threshold`` is the map's figure one below
    it, which counts that boundary. The epsilon does not depend on the threshold."""
    epsilon, _ = _map(scale, threshold, max_contributions)
    _, delta = _map(scale, threshold - 1, max_contributions)
    return epsilon, delta


@functools.lru_cache(maxsize=256)
def _calibrate(max_contributions: int, epsilon: float, delta: float) -> tuple[float, int, float, float]:
    """The scale whose map certifies at most ``epsilon``, then the smallest threshold whose delta (see
    ``_privacy``) is at most ``delta``: (scale, threshold, certified epsilon, certified delta). Depends
    only on the parameters, so it is cached (each map evaluation builds a measurement)."""
    scale = max_contributions / epsilon
    if not (math.isfinite(scale) and 0 < scale <= _MAX_SCALE):
        raise InvalidPrivacyParameter(f"epsilon {epsilon!r} is too small: the noise scale would be {scale:g}")
    # OpenDP takes thresholds from max_contributions (the l-infinity sensitivity) up; ``_privacy`` looks
    # one below, so the smallest candidate is one above that.
    lowest = max_contributions + 1
    try:
        for _ in range(_MAX_NUDGES):
            certified_epsilon, _ = _privacy(scale, lowest, max_contributions)
            if certified_epsilon <= epsilon:
                break
            scale = math.nextafter(scale, math.inf)
        else:  # pragma: no cover - the map is monotone in the scale
            raise InvalidPrivacyParameter(f"no scale certifies epsilon {epsilon!r}")
        # Delta falls as the threshold rises: double until it is met, then bisect. ``low`` is never a
        # candidate itself (it only marks the bottom of the range).
        low, high = lowest - 1, lowest
        while _privacy(scale, high, max_contributions)[1] > delta:
            if high >= _MAX_THRESHOLD:
                raise InvalidPrivacyParameter(f"no threshold gives delta {delta!r} at scale {scale:g}")
            low, high = high, min(high * 2, _MAX_THRESHOLD)
        while high - low > 1:
            middle = (low + high) // 2
            if _privacy(scale, middle, max_contributions)[1] <= delta:
                high = middle
            else:
                low = middle
        certified_epsilon, certified_delta = _privacy(scale, high, max_contributions)
    except dp.OpenDPException as exc:
        raise InvalidPrivacyParameter(f"OpenDP refused the threshold mechanism: {exc.message}") from exc
    return scale, high, certified_epsilon, certified_delta


@dataclass(frozen=True, slots=True)
class SelectedKeys:
    """The released keys with their noisy counts (both are the mechanism's output)."""

    counts: dict[str, int]
    mechanism: KeySelection


class KeySelection:
    """Releases the keys of a count map whose noisy count reaches a threshold, built before any data is read.

    Guarantee: ``(epsilon, delta)``-DP with respect to adding or removing one privacy unit, provided each
    unit contributes at most ``max_contributions`` rows to the counts (so it touches at most that many
    keys, each by at most that much). The scale is calibrated to ``epsilon`` as for counts; the threshold
    is the smallest integer whose OpenDP privacy map certifies at most ``delta``. ``epsilon`` and
    ``delta`` hold the certified figures (never above the request): what must be charged.

    Keys are strings; a caller with composite keys encodes them one-to-one (e.g. as JSON).
    """

    name = MECHANISM_LAPLACE_THRESHOLD

    def __init__(self, *, max_contributions: int, epsilon: float, delta: float, confidence: float = 0.95) -> None:
        check_epsilon(epsilon)
        if isinstance(max_contributions, bool) or not isinstance(max_contributions, int) or max_contributions < 1:
            raise InvalidPrivacyParameter(f"max_contributions must be an integer >= 1, got {max_contributions!r}")
        if isinstance(delta, bool) or not (isinstance(delta, int | float) and 0 < delta < 1):
            raise InvalidPrivacyParameter(f"delta must lie strictly between 0 and 1, got {delta!r}")
        if not 0 < confidence < 1:
            raise InvalidPrivacyParameter(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
        scale, threshold, certified_epsilon, certified_delta = _calibrate(max_contributions, float(epsilon), delta)
        self.max_contributions = max_contributions
        self.scale = scale
        self.threshold = threshold
        self.epsilon = certified_epsilon
        self.delta = certified_delta
        self.confidence = confidence
        self._measurement = _measurement(drawn_scale(scale), threshold)
        half_width = float(discrete_laplacian_scale_to_accuracy(scale, 1.0 - confidence))
        self.reliable_count = threshold + math.ceil(half_width)
        """A group with at least this many rows is released with probability at least ``confidence``."""

    def release(self, exact_counts: Mapping[str, int]) -> SelectedKeys:
        if any(count < 0 for count in exact_counts.values()):
            raise InvalidPrivacyParameter("counts must not be negative")
        noisy = self._measurement({str(key): int(count) for key, count in exact_counts.items()})
        return SelectedKeys(counts={str(key): int(value) for key, value in noisy.items()}, mechanism=self)
