"""Noisy release of integer counts through OpenDP's discrete Laplace mechanism.

The counts themselves are computed by the data source (pushed down); what arrives here is a vector of
exact integer counts, one per public group key, together with the bound on how much one privacy unit can
change that vector. This module only ever releases that vector through an OpenDP measurement.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import opendp.prelude as dp
from opendp.accuracy import accuracy_to_discrete_laplacian_scale, discrete_laplacian_scale_to_accuracy

from anonymization._calibration import calibrate, check_epsilon
from anonymization.errors import InvalidPrivacyParameter

# OpenDP gates its non-core constructors behind an explicit opt-in; the mechanisms used here
# (discrete Laplace on integer vectors) are part of that set.
dp.enable_features("contrib")

MECHANISM_DISCRETE_LAPLACE = "discrete_laplace"
# Beyond this the noise (drawn as i64) would approach the 9.2e18 limit; such an epsilon is a mistake.
_MAX_SCALE = 1e15


def _make_measurement(scale: float) -> dp.Measurement:
    return dp.m.make_laplace(dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64"), scale=scale)


@dataclass(frozen=True, slots=True)
class NoisyCounts:
    """A released count vector."""

    values: tuple[int, ...]
    mechanism: CountMechanism


class CountMechanism:
    """The discrete Laplace mechanism for a vector of integer counts, built before any data is touched.

    Guarantee: releasing through it is ``epsilon``-DP with respect to adding or removing one privacy unit,
    provided the caller's claim holds that one unit changes the count vector by at most
    ``l1_sensitivity`` in L1 norm: the source bounds each unit's contributions to that many rows, and the
    set of groups is public (not derived from the data).

    The scale starts at ``l1_sensitivity / epsilon`` and is nudged up by the last floating-point digit
    until OpenDP's privacy map certifies at most ``epsilon``; the certified figure (``self.epsilon``, never
    above the request) is what must be charged, and it is known here, before the data is read.
    """

    def __init__(self, *, l1_sensitivity: int, epsilon: float, confidence: float = 0.95) -> None:
        check_epsilon(epsilon)
        if not isinstance(l1_sensitivity, int) or isinstance(l1_sensitivity, bool) or l1_sensitivity < 1:
            raise InvalidPrivacyParameter(f"l1_sensitivity must be an integer >= 1, got {l1_sensitivity!r}")
        if not 0 < confidence < 1:
            raise InvalidPrivacyParameter(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
        measurement, scale, certified = calibrate(
            _make_measurement,
            d_in=l1_sensitivity,
            epsilon=epsilon,
            scale=l1_sensitivity / epsilon,
            max_scale=_MAX_SCALE,
        )
        self.l1_sensitivity = l1_sensitivity
        self.scale = scale
        self.confidence = confidence
        self.epsilon = certified
        self._measurement = measurement
        self.half_width = float(discrete_laplacian_scale_to_accuracy(self.scale, 1.0 - confidence))
        """Each released value is within ``half_width`` of the exact count with probability ``confidence``."""

    name = MECHANISM_DISCRETE_LAPLACE

    @staticmethod
    def epsilon_for_half_width(*, l1_sensitivity: int, half_width: float, confidence: float = 0.95) -> float:
        """The epsilon whose mechanism has at most ``half_width`` at ``confidence``: the inverse of the
        calibration above (OpenDP's ``accuracy_to_discrete_laplacian_scale``), so a client can ask for
        accuracy instead of epsilon. A mechanism built with the result reports a half-width within
        floating-point rounding of the target."""
        if not (math.isfinite(half_width) and half_width > 0):
            raise InvalidPrivacyParameter(f"half_width must be a finite number > 0, got {half_width!r}")
        if not 0 < confidence < 1:
            raise InvalidPrivacyParameter(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
        try:
            scale = float(accuracy_to_discrete_laplacian_scale(half_width, 1.0 - confidence))
        except dp.OpenDPException as exc:
            raise InvalidPrivacyParameter(f"no noise scale gives half_width {half_width!r}: {exc.message}") from exc
        return l1_sensitivity / scale

    def release(self, exact_counts: Sequence[int]) -> NoisyCounts:
        if len(exact_counts) == 0:
            raise InvalidPrivacyParameter("there must be at least one count to release")
        noisy = self._measurement([int(c) for c in exact_counts])
        return NoisyCounts(values=tuple(int(v) for v in noisy), mechanism=self)
