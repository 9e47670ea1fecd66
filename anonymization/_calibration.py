"""What every mechanism here does the same way: refuse a meaningless epsilon, and find the noise scale
whose OpenDP privacy map certifies no more than the epsilon asked for."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import opendp.prelude as dp

from anonymization.errors import InvalidPrivacyParameter

_MAX_NUDGES = 64

# A planted bug for the privacy audit's own test: the noise actually drawn is this factor of the scale
# the privacy map certified. Always 1.0 but inside ``planted_bug_weaker_noise``; reachable only from
# Python, never from a setting or the environment (this package reads neither).
_NOISE_FACTOR_FOR_AUDIT = 1.0


@contextlib.contextmanager
def planted_bug_weaker_noise(factor: float = 0.5) -> Iterator[None]:
    """For the privacy audit's own test only: mechanisms built inside draw noise at ``factor`` times
    the certified scale while still reporting the certified epsilon. The audit must catch this."""
    global _NOISE_FACTOR_FOR_AUDIT
    _NOISE_FACTOR_FOR_AUDIT = factor
    try:
        yield
    finally:
        _NOISE_FACTOR_FOR_AUDIT = 1.0


def drawn_scale(scale: float) -> float:
    """The scale noise is drawn at: the certified one, except under the audit's planted bug."""
    return scale * _NOISE_FACTOR_FOR_AUDIT


def check_epsilon(epsilon: float) -> None:
    if isinstance(epsilon, bool) or not (isinstance(epsilon, int | float) and math.isfinite(epsilon) and epsilon > 0):
        raise InvalidPrivacyParameter(f"epsilon must be a finite number > 0, got {epsilon!r}")


def calibrate(
    build: Callable[[float], dp.Measurement], *, d_in: int, epsilon: float, scale: float, max_scale: float
) -> tuple[dp.Measurement, float, float]:
    """Starting from ``scale``, nudge it up by the last floating-point digit until ``build(scale)``'s
    privacy map at ``d_in`` is at most ``epsilon``. Returns the measurement, its scale and the certified
    epsilon (never above the request: that is the figure to charge)."""
    if not (math.isfinite(scale) and 0 < scale <= max_scale):
        raise InvalidPrivacyParameter(f"epsilon {epsilon!r} is too small: the noise scale would be {scale:g}")
    try:
        for _ in range(_MAX_NUDGES):
            measurement = build(scale)
            certified = float(measurement.map(d_in))  # type: ignore[no-untyped-call]
            if certified <= epsilon:
                if _NOISE_FACTOR_FOR_AUDIT != 1.0:
                    measurement = build(drawn_scale(scale))
                return measurement, scale, certified
            scale = math.nextafter(scale, math.inf)
    except dp.OpenDPException as exc:
        raise InvalidPrivacyParameter(f"OpenDP refused the noise scale {scale!r}: {exc.message}") from exc
    except (TypeError, ValueError, OverflowError) as exc:  # arguments OpenDP's bindings cannot convert
        raise InvalidPrivacyParameter(f"OpenDP could not take the parameters (scale {scale!r}): {exc}") from exc
    raise InvalidPrivacyParameter(f"no scale certifies epsilon {epsilon!r}")  # pragma: no cover - map is monotone
