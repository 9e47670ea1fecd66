"""Turning exact statistics into released values: OpenDP noise first, then only post-processing.

Every aggregate is released from noisy statistics (never from exact ones), so whatever is computed
afterwards (a mean, a variance, clamping into bounds, rounding) costs no further privacy. Accuracy is
reported per value: exact for counts and sums (the discrete Laplace half-width), first-order
(delta-method) approximations for means, variances and standard deviations, and a rank interval for
quantiles, because a quantile's error in value units depends on the data around it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from anonymization import CountMechanism, QuantileMechanism
from gateway.exceptions import InvalidQuery
from gateway.query.statistics import AggregatePlan, QuantileGrid, required

_I64 = (-(2**63), 2**63 - 1)


def to_i64(value: int) -> int:
    """Saturate at the 64-bit range OpenDP's integer mechanisms take. Clamping is 1-Lipschitz, so it
    never increases sensitivity; it only matters for absurd totals, and never raises."""
    return min(max(int(value), _I64[0]), _I64[1])


@dataclass(frozen=True, slots=True)
class AggregateMechanisms:
    """The mechanisms of one aggregate, built (and priced) before any data is read."""

    plan: AggregatePlan
    statistics: tuple[CountMechanism, ...]
    quantile: QuantileMechanism | None = None

    @property
    def epsilon(self) -> float:
        parts = [mechanism.epsilon for mechanism in self.statistics]
        if self.quantile is not None:
            parts.append(self.quantile.epsilon)
        return math.fsum(parts)


def even_split(parts: int, epsilon: float) -> list[float]:
    """The default: every part (an aggregate, or partition selection) gets the same share of the query's
    epsilon."""
    return [epsilon / parts] * parts


def epsilons_for_accuracy(
    plans: Sequence[AggregatePlan], *, half_width: float, confidence: float, max_contributions: int
) -> list[float]:
    """Per aggregate, the epsilon that gives each released value at most ``half_width`` at ``confidence``.

    Only counts and sums have an error that does not depend on the data; a mean's depends on how many
    rows its group has, a quantile's on the data around it, so those take an epsilon instead."""
    epsilons = []
    for plan in plans:
        function = plan.aggregate.function
        if function not in ("count", "units", "sum"):
            raise InvalidQuery(
                f"an accuracy target fits COUNT and SUM, whose error does not depend on the data; "
                f"give epsilon for {plan.aggregate.name!r} ({function})"
            )
        statistic = plan.statistics[0]
        units = statistic.fixed_point.scale if statistic.fixed_point is not None else 1
        epsilons.append(
            CountMechanism.epsilon_for_half_width(
                l1_sensitivity=max_contributions * statistic.row_bound(),
                half_width=half_width * units,
                confidence=confidence,
            )
        )
    return epsilons


def build_mechanisms(
    plans: Sequence[AggregatePlan], *, epsilons: Sequence[float], max_contributions: int, confidence: float
) -> tuple[AggregateMechanisms, ...]:
    """One set of mechanisms per aggregate, each aggregate's epsilon split evenly over its statistics
    (basic composition: the query's cost is the sum of the parts)."""
    built = []
    for plan, share in zip(plans, epsilons, strict=True):
        if plan.grid is not None:
            quantile = QuantileMechanism(
                candidates=plan.grid.candidates(),
                alpha=required(plan.aggregate.alpha, "the quantile's alpha"),
                max_contributions=max_contributions,
                epsilon=share,
                confidence=confidence,
            )
            built.append(AggregateMechanisms(plan, (), quantile))
            continue
        part = share / len(plan.statistics)
        mechanisms = tuple(
            CountMechanism(
                l1_sensitivity=max_contributions * statistic.row_bound(), epsilon=part, confidence=confidence
            )
            for statistic in plan.statistics
        )
        built.append(AggregateMechanisms(plan, mechanisms))
    return tuple(built)


@dataclass(frozen=True, slots=True)
class ReleasedAggregate:
    values: list[Any]
    """One value per released group, in group order."""
    report: dict[str, Any]


def _noisy(mechanisms: AggregateMechanisms, exact: dict[tuple[object, ...], list[int]]) -> list[list[int]]:
    """The noisy vector (over all groups) of each of the aggregate's statistics."""
    return [
        list(mechanism.release([to_i64(value) for value in exact[statistic.key]]).values)
        for statistic, mechanism in zip(mechanisms.plan.statistics, mechanisms.statistics, strict=True)
    ]


def _release_quantile(
    quantile: QuantileMechanism, grid: QuantileGrid, histograms: list[list[int]]
) -> ReleasedAggregate:
    values = []
    for counts in histograms:
        at_most = list(_cumulative(counts))
        values.append(quantile.release(at_most, at_most[-1]))
    return ReleasedAggregate(
        values=values,
        report={
            "mechanism": quantile.name,
            "scale": quantile.scale,
            "epsilon": quantile.epsilon,
            "candidates": len(quantile.candidates),
            "resolution": grid.step,
            "rank_half_width": quantile.rank_half_width,
            "note": "with the stated confidence the value's rank is within rank_half_width rows of the target",
        },
    )


def _cumulative(counts: Sequence[int]) -> Sequence[int]:
    total = 0
    running = []
    for count in counts:
        total += count
        running.append(total)
    return running


def release_aggregate(
    mechanisms: AggregateMechanisms,
    exact: dict[tuple[object, ...], list[int]],
    histograms: list[list[int]] | None,
) -> ReleasedAggregate:
    """Release one aggregate for every group. ``exact`` maps a statistic's key to its per-group values."""
    plan = mechanisms.plan
    aggregate = plan.aggregate
    if plan.grid is not None:
        return _release_quantile(
            required(mechanisms.quantile, "the quantile mechanism"),
            plan.grid,
            required(histograms, "the quantile histograms"),
        )
    noisy = _noisy(mechanisms, exact)
    first = mechanisms.statistics[0]
    report: dict[str, Any] = {
        "mechanism": first.name,
        "epsilon": mechanisms.epsilon,
        "scale": [mechanism.scale for mechanism in mechanisms.statistics]
        if len(mechanisms.statistics) > 1
        else first.scale,
    }
    if aggregate.function in ("count", "units"):
        report["half_width"] = first.half_width
        return ReleasedAggregate(values=noisy[0], report=report)
    if aggregate.function == "sum":
        statistic = plan.statistics[0]
        scale = statistic.fixed_point.scale if statistic.fixed_point else 1
        values: list[Any] = [value if scale == 1 else value / scale for value in noisy[0]]
        report["half_width"] = first.half_width / scale
        return ReleasedAggregate(values=values, report=report)
    return _release_moments(mechanisms, noisy, report)


def _release_moments(
    mechanisms: AggregateMechanisms, noisy: list[list[int]], report: dict[str, Any]
) -> ReleasedAggregate:
    """Means, variances and standard deviations from noisy count, sum and sum of squares of the centred
    fixed-point values, clamped into what the bounds allow (post-processing)."""
    plan = mechanisms.plan
    aggregate = plan.aggregate
    sum_statistic = plan.statistics[1]
    fixed = required(sum_statistic.fixed_point, "the sum's fixed point")
    scale, centre = fixed.scale, fixed.centre / fixed.scale
    hw_count = mechanisms.statistics[0].half_width
    hw_sum = mechanisms.statistics[1].half_width / scale
    values: list[Any] = []
    half_widths: list[float] = []
    for index, raw_count in enumerate(noisy[0]):
        count = max(raw_count, 1)
        total = noisy[1][index] / scale
        shifted_mean = total / count
        mean = min(max(centre + shifted_mean, fixed.lower), fixed.upper)
        if aggregate.function == "mean":
            values.append(mean)
            half_widths.append((hw_sum + abs(shifted_mean) * hw_count) / count)
            continue
        squares = noisy[2][index] / scale**2
        hw_squares = mechanisms.statistics[2].half_width / scale**2
        correction = count / (count - 1) if aggregate.ddof == 1 and count > 1 else 1.0
        ceiling = (max(fixed.upper - centre, centre - fixed.lower) ** 2) * correction
        variance = min(max((squares / count - shifted_mean**2) * correction, 0.0), ceiling)
        hw_variance = correction * (
            hw_squares / count
            + 2 * abs(shifted_mean) * hw_sum / count
            + abs(squares / count - 2 * shifted_mean**2) * hw_count / count
        )
        if aggregate.function == "variance":
            values.append(variance)
            half_widths.append(hw_variance)
        else:
            deviation = math.sqrt(variance)
            values.append(deviation)
            half_widths.append(hw_variance / (2 * deviation) if deviation > 0 else math.sqrt(hw_variance))
    report["half_width"] = half_widths
    report["approximate_half_width"] = True
    return ReleasedAggregate(values=values, report=report)
