"""The exact statistics the source computes for each aggregate, and how far one privacy unit moves them.

Every statistic is an integer, so its sensitivity is exact: numeric values are clamped to the catalog's
bounds and turned into fixed-point integers (``round(value * 10**decimals)``, minus an integer centre)
*in the source*. Sums of such integers have no floating-point rounding that could let one row move the
result further than the bound says (the weakness of float sums in DP systems).

| aggregate        | statistics (each gets its own share of epsilon) |
|------------------|--------------------------------------------------|
| COUNT(*)         | rows                                             |
| COUNT(col)       | count(col)                                       |
| SUM(col)         | sum of fixed-point values                        |
| AVG(col)         | count(col), sum of centred values                |
| VARIANCE/STDDEV  | count(col), sum and sum of squares of centred values |
| quantiles        | a histogram over the public candidate grid (see ``anonymization.QuantileMechanism``) |

One unit contributes at most ``max_contributions`` rows, so a statistic's L1 sensitivity (over all
groups together) is ``max_contributions`` times the most one row can add to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeVar

from gateway.data.catalog import ColumnSpec, DatasetSpec
from gateway.exceptions import QueryNotSupported
from gateway.query.plan import NUMERIC_FUNCTIONS, Aggregate, QueryPlan

StatisticKind = Literal["rows", "count", "sum", "sumsq", "units"]
T = TypeVar("T")


def required(value: T | None, what: str) -> T:
    """An invariant the planner establishes; checked (not asserted) so it holds under ``python -O``."""
    if value is None:  # pragma: no cover - a planner bug, not a user error
        raise ValueError(f"internal error: {what} is missing")
    return value


DEFAULT_QUANTILE_CANDIDATES = 201


@dataclass(frozen=True, slots=True)
class FixedPoint:
    """How a bounded numeric column becomes integers: ``round(clamp(x) * scale) - centre``."""

    lower: float
    upper: float
    scale: int
    centre: int

    @property
    def lower_int(self) -> int:
        return round(self.lower * self.scale) - self.centre

    @property
    def upper_int(self) -> int:
        return round(self.upper * self.scale) - self.centre

    @property
    def bound(self) -> int:
        """The largest absolute value one row can contribute."""
        return max(abs(self.lower_int), abs(self.upper_int))


@dataclass(frozen=True, slots=True)
class Statistic:
    kind: StatisticKind
    column: str | None = None
    fixed_point: FixedPoint | None = None

    @property
    def key(self) -> tuple[object, ...]:
        return (self.kind, self.column, self.fixed_point)

    def row_bound(self) -> int:
        """The most one row adds to this statistic (in absolute value)."""
        if self.kind in ("rows", "count", "units"):
            return 1
        if self.fixed_point is None:  # pragma: no cover - sums are always built with a fixed point
            raise ValueError("a sum needs a fixed-point representation")
        return self.fixed_point.bound if self.kind == "sum" else self.fixed_point.bound**2


@dataclass(frozen=True, slots=True)
class QuantileGrid:
    """The public candidate grid of a quantile column: ``count`` evenly spaced values in [lower, upper]."""

    column: str
    lower: float
    upper: float
    count: int

    @property
    def step(self) -> float:
        return (self.upper - self.lower) / (self.count - 1)

    def candidates(self) -> tuple[float, ...]:
        return tuple(self.lower + index * self.step for index in range(self.count))


@dataclass(frozen=True, slots=True)
class AggregatePlan:
    """The statistics behind one aggregate; for a quantile, its grid and the per-bucket count."""

    aggregate: Aggregate
    statistics: tuple[Statistic, ...]
    grid: QuantileGrid | None = None


@dataclass(frozen=True, slots=True)
class BoundedColumn:
    name: str
    spec: ColumnSpec
    lower: float
    upper: float


def display(dataset: DatasetSpec, name: str | None) -> str:
    """A column as the analyst wrote it: a derived column's expression, else its name."""
    if name is None:
        return "*"
    spec = dataset.columns.get(name)
    return spec.description if name.startswith("__e") and spec is not None and spec.description else name


def _bounded(dataset: DatasetSpec, aggregate: Aggregate) -> BoundedColumn:
    name = required(aggregate.column, "the aggregate's column")
    column = dataset.columns[name]
    if column.type not in ("integer", "float") or column.lower is None or column.upper is None:
        raise QueryNotSupported(
            f"{aggregate.function.upper()} needs a numeric column with lower and upper bounds in the catalog; "
            f"{display(dataset, name)!r} has none"
        )
    if name == dataset.privacy_unit:
        raise QueryNotSupported("aggregating the privacy unit itself is not supported")
    return BoundedColumn(name=name, spec=column, lower=column.lower, upper=column.upper)


def _fixed_point(column: BoundedColumn, *, centred: bool) -> FixedPoint:
    scale = 1 if column.spec.type == "integer" else 10**column.spec.decimals
    centre = round((column.lower + column.upper) / 2 * scale) if centred else 0
    return FixedPoint(lower=column.lower, upper=column.upper, scale=scale, centre=centre)


def _quantile_grid(column: BoundedColumn) -> QuantileGrid:
    count = column.spec.quantile_candidates or DEFAULT_QUANTILE_CANDIDATES
    if column.spec.type == "integer" and column.upper - column.lower + 1 <= count:
        count = int(column.upper - column.lower) + 1  # every integer in range is a candidate
    return QuantileGrid(column=column.name, lower=column.lower, upper=column.upper, count=max(count, 2))


def plan_statistics(plan: QueryPlan, dataset: DatasetSpec) -> tuple[AggregatePlan, ...]:
    """What the source must compute for ``plan``. Raises for aggregates the catalog cannot support."""
    plans = []
    quantile_columns = set()
    for aggregate in plan.aggregates:
        if aggregate.function == "count":
            statistic = Statistic("rows") if aggregate.column is None else Statistic("count", aggregate.column)
            plans.append(AggregatePlan(aggregate, (statistic,)))
            continue
        if aggregate.function == "units":
            if aggregate.column != dataset.unit:
                raise QueryNotSupported(
                    f"COUNT(DISTINCT ...) counts persons: it takes the privacy unit {dataset.unit!r}, "
                    f"not {display(dataset, aggregate.column)!r}"
                )
            # A person adds at most one to each group's count of persons (and, over all groups, at most
            # one per row it contributes): the sensitivity of a row count, never more.
            plans.append(AggregatePlan(aggregate, (Statistic("units", aggregate.column),)))
            continue
        if aggregate.function not in NUMERIC_FUNCTIONS:  # pragma: no cover - the plan type forbids it
            raise QueryNotSupported(f"aggregate {aggregate.function} is not supported")
        column = _bounded(dataset, aggregate)
        name = column.name
        if aggregate.function == "quantile":
            quantile_columns.add(name)
            # The count of the column per bucket is the quantile's histogram.
            plans.append(AggregatePlan(aggregate, (Statistic("count", name),), _quantile_grid(column)))
        elif aggregate.function == "sum":
            plans.append(AggregatePlan(aggregate, (Statistic("sum", name, _fixed_point(column, centred=False)),)))
        else:
            fixed = _fixed_point(column, centred=True)
            statistics = [Statistic("count", name), Statistic("sum", name, fixed)]
            if aggregate.function in ("variance", "stddev"):
                statistics.append(Statistic("sumsq", name, fixed))
            plans.append(AggregatePlan(aggregate, tuple(statistics)))
    if len(quantile_columns) > 1:
        raise QueryNotSupported("quantiles of more than one column in one query are not supported; ask them apart")
    return tuple(plans)


def distinct_statistics(plans: tuple[AggregatePlan, ...]) -> tuple[Statistic, ...]:
    """Each statistic once, in a stable order: the columns of the compiled statement."""
    seen: dict[tuple[object, ...], Statistic] = {}
    for aggregate_plan in plans:
        for statistic in aggregate_plan.statistics:
            seen.setdefault(statistic.key, statistic)
    return tuple(seen.values())


def quantile_grid(plans: tuple[AggregatePlan, ...]) -> QuantileGrid | None:
    return next((p.grid for p in plans if p.grid is not None), None)
