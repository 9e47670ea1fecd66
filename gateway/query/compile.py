"""Compiling a validated plan to one SQL statement the source runs (DuckDB for files, PostgreSQL for tables).

The statement does everything that needs raw rows, so no row ever reaches Python:

0. project the columns it needs with the catalog's types (``TRY_CAST``: a value the source cannot
   convert becomes NULL rather than an error, because an error that some rows trigger and others do
   not would be an exact, un-noised answer), dropping rows without a privacy unit (they cannot be
   bounded, so they are not counted);
1. filter with the plan's condition;
2. bound contributions: keep at most ``max_contributions`` rows per privacy unit, picked uniformly at
   random (``row_number() OVER (PARTITION BY unit ORDER BY random())``), never by a data-dependent order;

(steps 0 and 2 were done once, at ingestion, for a file's verified snapshot: see
``gateway.data.snapshots``; a PostgreSQL table, which changes under the gateway, gets them every time);
3. group and compute the exact integer statistics of ``statistics.py`` (and, for a quantile, group by
   the value's bucket on the public candidate grid as well);
4. keep only groups whose keys are public (so the released key set does not depend on the data); a
   grouping column without public keys passes all its groups on to DP partition selection instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from gateway.data.catalog import DatasetSpec
from gateway.data.relations import (
    Relation,
    ident,
    quoted_condition,
    raw_relation,
    string_literal,
    typed_projection,
)
from gateway.query.expressions import columns_of, row_sql
from gateway.query.plan import QueryPlan
from gateway.query.statistics import (
    AggregatePlan,
    QuantileGrid,
    Statistic,
    distinct_statistics,
    quantile_grid,
    required,
)

_ROW_NUMBER = "__datapoort_rn"
_SHUFFLE = "__datapoort_shuffle"
BUCKET = "__datapoort_bucket"
ROWS = Statistic("rows")
"""Rows per group after bounding: what partition selection thresholds."""


@dataclass(frozen=True, slots=True)
class CompiledQuery:
    """The statement and how to read its rows: group values, then the bucket (if any), then statistics."""

    sql: str
    group_width: int
    statistics: tuple[Statistic, ...]
    grid: QuantileGrid | None


def _number(value: float) -> str:
    return repr(int(value)) if float(value).is_integer() else repr(float(value))


def _clamped(column: str, lower: float, upper: float, dialect: str) -> str:
    return f"LEAST(GREATEST({ident(column, dialect)}, {_number(lower)}), {_number(upper)})"


def _statistic_sql(statistic: Statistic, dialect: str) -> str:
    if statistic.kind == "rows":
        return "count(*)"
    column = required(statistic.column, "the statistic's column")
    if statistic.kind == "count":
        return f"count({ident(column, dialect)})"
    if statistic.kind == "units":
        return f"count(DISTINCT {ident(column, dialect)})"
    fixed = required(statistic.fixed_point, "the sum's fixed point")
    clamped = _clamped(column, fixed.lower, fixed.upper, dialect)
    scaled = clamped if fixed.scale == 1 else f"round({clamped} * {fixed.scale})"
    value = f"(CAST({scaled} AS BIGINT) - {fixed.centre})"
    if statistic.kind == "sum":
        return f"sum({value})"
    wide = "HUGEINT" if dialect == "duckdb" else "NUMERIC"
    return f"sum(CAST({value} AS {wide}) * CAST({value} AS {wide}))"


def _bucket_sql(grid: QuantileGrid, dialect: str) -> str:
    """The number of candidates strictly below the clamped value: the value is <= candidate i iff
    its bucket is <= i, so cumulative bucket counts are the counts the quantile scores need."""
    clamped = _clamped(grid.column, grid.lower, grid.upper, dialect)
    return f"CAST(ceil(({clamped} - {_number(grid.lower)}) / {grid.step!r}) AS BIGINT)"


def compile_statistics(
    plan: QueryPlan,
    dataset: DatasetSpec,
    aggregates: tuple[AggregatePlan, ...],
    *,
    select_keys: bool = False,
    relation: Relation | None = None,
) -> CompiledQuery:
    """One statement computing every statistic per group (and per quantile bucket, if any).

    ``select_keys`` adds the per-group row count that partition selection needs (when not already
    computed), for plans grouping by a column without public keys.

    ``relation`` is what the statement reads: a file's verified snapshot (typed and bounded at
    ingestion, so the statement leaves out steps 0 and 2) or, by default, the source itself (a
    PostgreSQL table, which can change under the gateway, is always bounded here). Either way one plan
    compiles to one statement, whatever the data holds."""
    relation = relation or raw_relation(dataset)
    dialect = relation.dialect
    statistics = distinct_statistics(aggregates)
    if select_keys and ROWS not in statistics:
        statistics = (*statistics, ROWS)
    grid = quantile_grid(aggregates)
    unit = ident(dataset.unit, dialect)
    counted = {aggregate.column for aggregate in plan.aggregates if aggregate.column is not None}
    derived = {item.name: item for item in plan.derived}
    used = set(plan.group_by) | counted | _condition_columns(plan.where)
    # Derived columns are computed from the columns they read, in a step of their own after typing.
    used = (used - set(derived)) | {name for item in derived.values() for name in columns_of(item.expression)}
    derived_sql = ", ".join(
        f"{row_sql(item.expression, dataset.columns, dialect)} AS {ident(item.name, dialect)}" for item in plan.derived
    )

    condition = [f"({quoted_condition(plan.where, dialect)})"] if plan.where is not None else []
    outputs = [f"CAST({ident(name, dialect)} AS VARCHAR) AS {ident(name, dialect)}" for name in plan.group_by]
    if grid is not None:
        outputs.append(f"{_bucket_sql(grid, dialect)} AS {BUCKET}")
    outputs += [f"{_statistic_sql(statistic, dialect)} AS __s{index}" for index, statistic in enumerate(statistics)]
    positions = len(plan.group_by) + (1 if grid is not None else 0)
    group_clause = f"\n    GROUP BY {', '.join(str(index + 1) for index in range(positions))}" if positions else ""
    keep_public = _public_keys_only(plan, dataset, dialect)

    if relation.bounded:
        names = used or {dataset.unit}
        columns = ", ".join(ident(name, dialect) for name in sorted(names))
        ctes = [f"typed AS (\n    SELECT {columns}\n    FROM {relation.sql}\n)"]
        rows, row_where = "typed", " AND ".join(condition) or "TRUE"
        if derived_sql:
            ctes.append(f"derived AS (\n    SELECT *, {derived_sql}\n    FROM typed\n)")
            rows = "derived"
    else:
        names = used | {dataset.unit}
        projection = (
            ", ".join(ident(name, dialect) for name in sorted(names))
            if relation.typed
            else typed_projection(dataset, names, dialect)
        )
        ctes = [f"typed AS (\n    SELECT {projection}\n    FROM {relation.sql}\n)"]
        source = "typed"
        if derived_sql:
            ctes.append(f"derived AS (\n    SELECT *, {derived_sql}\n    FROM typed\n)")
            source = "derived"
        # random() is drawn in its own step: DuckDB does not allow a volatile window ordering.
        row_filters = [f"{unit} IS NOT NULL", *condition]
        ctes.append(
            f"shuffled AS (\n    SELECT *, random() AS {_SHUFFLE}\n    FROM {source}\n"
            f"    WHERE {' AND '.join(row_filters)}\n)"
        )
        ctes.append(
            "bounded AS (\n"
            f"    SELECT *, row_number() OVER (PARTITION BY {unit} ORDER BY {_SHUFFLE}) AS {_ROW_NUMBER}\n"
            "    FROM shuffled\n)"
        )
        rows, row_where = "bounded", f"{_ROW_NUMBER} <= {dataset.max_contributions}"
    ctes.append(
        f"grouped AS (\n    SELECT {', '.join(outputs)}\n    FROM {rows}\n    WHERE {row_where}{group_clause}\n)"
    )
    return CompiledQuery(
        sql="WITH " + ", ".join(ctes) + "\nSELECT grouped.* FROM grouped" + keep_public,
        group_width=len(plan.group_by),
        statistics=statistics,
        grid=grid,
    )


def _public_keys_only(plan: QueryPlan, dataset: DatasetSpec, dialect: str) -> str:
    """Keep only groups whose keys are public (for the grouping columns that have public keys; the
    others go through partition selection). Applied to the grouped rows, not to every source row: the
    groups kept are the same either way (bounding has already happened), and DuckDB does it far faster
    as a semi-join on a handful of groups than as an IN test on millions of rows."""
    clauses = []
    for index, name in enumerate(plan.group_by):
        keys = dataset.columns[name].keys
        if keys is None:
            continue
        column = f"grouped.{ident(name, dialect)}"
        if dialect == "duckdb":
            values = ", ".join(f"({string_literal(key, dialect)})" for key in keys)
            clauses.append(f"\nSEMI JOIN (VALUES {values}) AS __k{index}(v) ON {column} = __k{index}.v")
        else:
            clauses.append(f"{column} IN ({', '.join(string_literal(key, dialect) for key in keys)})")
    if dialect == "duckdb" or not clauses:
        return "".join(clauses)
    return "\nWHERE " + " AND ".join(clauses)


def _condition_columns(condition: exp.Expression | None) -> set[str]:
    return set() if condition is None else {str(node.name) for node in condition.find_all(exp.Column)}
