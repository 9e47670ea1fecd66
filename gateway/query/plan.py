"""The internal query plan every front door (SQL today, a JSON plan later) is turned into."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlglot import exp

AggregateFunction = Literal["count", "sum", "mean", "variance", "stddev", "quantile"]
NUMERIC_FUNCTIONS: frozenset[str] = frozenset({"sum", "mean", "variance", "stddev", "quantile"})


@dataclass(frozen=True, slots=True)
class Aggregate:
    function: AggregateFunction
    column: str | None
    """``None`` for ``COUNT(*)``."""
    name: str
    """The output column name (the alias, or a default such as ``count``)."""
    alpha: float | None = None
    """The quantile (0.5 for the median); only for ``quantile``."""
    ddof: int = 0
    """Delta degrees of freedom of ``variance``/``stddev``: 1 for the sample form, 0 for the population."""

    def sql(self) -> str:
        """The aggregate in canonical SQL, for the audit log."""
        argument = self.column or "*"
        if self.function == "quantile":
            return f"PERCENTILE_CONT({self.alpha!r}) WITHIN GROUP (ORDER BY {argument})"
        name = {"mean": "AVG", "variance": "VAR_SAMP", "stddev": "STDDEV_SAMP"}.get(
            self.function, self.function.upper()
        )
        if self.function in ("variance", "stddev") and self.ddof == 0:
            name = name.replace("_SAMP", "_POP")
        return f"{name}({argument})"


@dataclass(frozen=True, slots=True)
class OutputColumn:
    name: str
    kind: Literal["group", "aggregate"]


@dataclass(frozen=True, slots=True)
class QueryPlan:
    dataset: str
    group_by: tuple[str, ...]
    aggregates: tuple[Aggregate, ...]
    outputs: tuple[OutputColumn, ...]
    where: exp.Expression | None
    """A condition tree over unqualified columns, already checked against a whitelist of node types."""
    order_by: tuple[tuple[str, bool], ...]
    """(output column, descending) pairs, applied after noise (post-processing)."""
    limit: int | None

    def normalised(self) -> str:
        """A canonical SQL text of the plan, for the audit log."""
        select = [
            output.name if output.kind == "group" else f"{self._aggregate(output.name).sql()} AS {output.name}"
            for output in self.outputs
        ]
        text = f"SELECT {', '.join(select)} FROM {self.dataset}"  # noqa: S608 - audit text, never executed
        if self.where is not None:
            text += f" WHERE {self.where.sql()}"
        if self.group_by:
            text += f" GROUP BY {', '.join(self.group_by)}"
        if self.order_by:
            text += " ORDER BY " + ", ".join(f"{name} {'DESC' if desc else 'ASC'}" for name, desc in self.order_by)
        if self.limit is not None:
            text += f" LIMIT {self.limit}"
        return text

    def _aggregate(self, name: str) -> Aggregate:
        return next(aggregate for aggregate in self.aggregates if aggregate.name == name)
