"""Compiling a validated plan to one SQL statement the source runs (DuckDB dialect for file sources).

The statement does everything that needs raw rows, so no row ever reaches Python:

0. project the columns it needs with the catalog's types (``TRY_CAST``: a value the source cannot
   convert becomes NULL rather than an error, because an error that some rows trigger and others do
   not would be an exact, un-noised answer), dropping rows without a privacy unit (they cannot be
   bounded, so they are not counted);
1. filter with the plan's condition;
2. bound contributions: keep at most ``max_contributions`` rows per privacy unit, picked uniformly at
   random (``row_number() OVER (PARTITION BY unit ORDER BY random())``), never by a data-dependent order;
3. keep only rows whose group values are public keys (so the released key set does not depend on data);
4. group and count.
"""

from __future__ import annotations

from sqlglot import exp

from gateway.catalog import DatasetSpec
from gateway.query.plan import QueryPlan

DIALECT = "duckdb"
_SQL_TYPES = {"string": "VARCHAR", "integer": "BIGINT", "float": "DOUBLE", "date": "DATE", "boolean": "BOOLEAN"}
_ROW_NUMBER = "__datapoort_rn"
_SHUFFLE = "__datapoort_shuffle"


def _ident(name: str) -> str:
    return exp.to_identifier(name, quoted=True).sql(DIALECT)


def _string(value: str) -> str:
    return exp.Literal.string(value).sql(DIALECT)


def _source_relation(dataset: DatasetSpec) -> str:
    reader = {"parquet": "read_parquet", "csv": "read_csv_auto"}[dataset.source.kind]
    return f"{reader}({_string(dataset.source.path)})"


def _quoted_condition(condition: exp.Expression) -> str:
    def quote(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Column):
            return exp.column(exp.to_identifier(node.name, quoted=True))
        return node

    return condition.copy().transform(quote).sql(DIALECT)


def _condition_columns(condition: exp.Expression | None) -> set[str]:
    return set() if condition is None else {str(node.name) for node in condition.find_all(exp.Column)}


def compile_counts(plan: QueryPlan, dataset: DatasetSpec) -> str:
    """One statement returning ``group values (as text) ..., count_0, count_1, ...`` per non-empty group."""
    unit = _ident(dataset.privacy_unit)
    counted = {aggregate.column for aggregate in plan.aggregates if aggregate.column is not None}
    needed = sorted(set(plan.group_by) | counted | _condition_columns(plan.where) | {dataset.privacy_unit})
    typed = ", ".join(
        f"TRY_CAST({_ident(name)} AS {_SQL_TYPES[dataset.columns[name].type]}) AS {_ident(name)}" for name in needed
    )
    row_filters = [f"{unit} IS NOT NULL"]
    if plan.where is not None:
        row_filters.append(f"({_quoted_condition(plan.where)})")

    group_columns = [_ident(name) for name in plan.group_by]
    group_filters = []
    for name in plan.group_by:
        keys = dataset.columns[name].keys or ()
        group_filters.append(f"CAST({_ident(name)} AS VARCHAR) IN ({', '.join(_string(key) for key in keys)})")
    counts = [
        f"count({'*' if aggregate.column is None else _ident(aggregate.column)}) AS {_ident(f'__a{index}')}"
        for index, aggregate in enumerate(plan.aggregates)
    ]
    keys_out = [f"CAST({column} AS VARCHAR) AS {column}" for column in group_columns]
    outer_where = " AND ".join([f"{_ROW_NUMBER} <= {dataset.max_contributions}", *group_filters])
    group_clause = (
        f"\nGROUP BY {', '.join(f'{index + 1}' for index in range(len(group_columns)))}" if group_columns else ""
    )
    # random() is drawn in its own step: DuckDB does not allow a volatile window ordering.
    return (
        "WITH typed AS (\n"
        f"    SELECT {typed}\n"
        f"    FROM {_source_relation(dataset)}\n"
        "), shuffled AS (\n"
        f"    SELECT *, random() AS {_SHUFFLE}\n"
        f"    FROM typed\n"
        f"    WHERE {' AND '.join(row_filters)}\n"
        "), bounded AS (\n"
        f"    SELECT *, row_number() OVER (PARTITION BY {unit} ORDER BY {_SHUFFLE}) AS {_ROW_NUMBER}\n"
        "    FROM shuffled\n"
        ")\n"
        f"SELECT {', '.join([*keys_out, *counts])}\n"
        "FROM bounded\n"
        f"WHERE {outer_where}"
        f"{group_clause}"
    )
