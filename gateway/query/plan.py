"""The internal query plan every front door (SQL, the JSON plan) is turned into.

Names in a plan are *flat*: a column of a single-table query is named as in the catalog; in a join it is
``alias.column``. Row-level expressions the analyst wrote (``CASE``, arithmetic, date parts, prefixes) are
``Derived`` columns named ``__e<n>``, computed by the statement before aggregation with bounds and keys
derived from the catalog (``gateway.query.expressions``). What is computed from released values
(``SUM(x) / COUNT(*)``, rates per inhabitant, ``ROUND``) is a ``computed`` output: post-processing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from sqlglot import exp

AggregateFunction = Literal["count", "sum", "mean", "variance", "stddev", "quantile", "units"]
"""``units`` is ``COUNT(DISTINCT <privacy unit>)``: persons, not rows."""
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

    def sql(self, texts: Mapping[str, str] | None = None) -> str:
        """The aggregate in canonical SQL, for the audit log (``texts``: derived columns as written)."""
        argument = (texts or {}).get(self.column or "", self.column or "*")
        if self.function == "units":
            return f"COUNT(DISTINCT {argument})"
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
    kind: Literal["group", "aggregate", "computed", "lookup"]
    source: str | None = None
    """A group: its grouping column (flat name), when the output is renamed. A lookup: the public
    column (``alias.column``) read for each group's key."""
    expression: exp.Expression | None = None
    """A computed output: an expression over aggregate names, group outputs, lookups and constants."""

    @property
    def column(self) -> str:
        return self.source or self.name


@dataclass(frozen=True, slots=True)
class TableRef:
    """A table of the query. The first is the FROM table; every other is joined ``on`` (a column of an
    earlier table, a column of this one), both flat names."""

    dataset: str
    alias: str
    join: Literal["from", "inner", "left"] = "from"
    on: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Derived:
    """A row-level expression computed before aggregation, as a column of its own."""

    name: str
    expression: exp.Expression
    """Over flat column names."""
    text: str
    """As written, for messages and the audit log."""


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
    tables: tuple[TableRef, ...] = ()
    """Empty for a single-table query (on ``dataset``); else the FROM table and its joins."""
    derived: tuple[Derived, ...] = ()
    having: exp.Expression | None = None
    """A condition on released values (output names), applied after noise."""
    lookups: tuple[tuple[str, str], ...] = ()
    """(public column, the grouping column its table is joined on): public values read per group."""

    @property
    def datasets(self) -> tuple[str, ...]:
        return tuple(table.dataset for table in self.tables) or (self.dataset,)

    def normalised(self) -> str:
        """A canonical SQL text of the plan, for the audit log."""
        texts = {derived.name: derived.text for derived in self.derived}
        select = []
        for output in self.outputs:
            if output.kind == "aggregate":
                select.append(f"{self._aggregate(output.name).sql(texts)} AS {output.name}")
            elif output.kind == "computed" and output.expression is not None:
                select.append(f"{output.expression.sql()} AS {output.name}")
            else:
                written = texts.get(output.column, output.column)
                select.append(written if written == output.name else f"{written} AS {output.name}")
        hidden = [a for a in self.aggregates if a.name not in {o.name for o in self.outputs}]
        select += [f"{aggregate.sql(texts)} AS {aggregate.name}" for aggregate in hidden]
        text = f"SELECT {', '.join(select)} FROM {self._from()}"  # noqa: S608 - audit text, never executed
        if self.where is not None:
            text += f" WHERE {self.where.sql()}"
        if self.group_by:
            text += f" GROUP BY {', '.join(texts.get(name, name) for name in self.group_by)}"
        if self.having is not None:
            text += f" HAVING {self.having.sql()}"
        if self.order_by:
            text += " ORDER BY " + ", ".join(f"{name} {'DESC' if desc else 'ASC'}" for name, desc in self.order_by)
        if self.limit is not None:
            text += f" LIMIT {self.limit}"
        return text

    def _aggregate(self, name: str) -> Aggregate:
        return next(aggregate for aggregate in self.aggregates if aggregate.name == name)

    def _from(self) -> str:
        if not self.tables:
            return self.dataset
        parts = []
        for table in self.tables:
            named = f"{table.dataset} AS {table.alias}"
            if table.on is None:
                parts.append(named)
            else:
                parts.append(f"{table.join.upper()} JOIN {named} ON {table.on[0]} = {table.on[1]}")
        return " ".join(parts)
