"""Checking a plan against the catalog: every name must exist and every literal must fit its column."""

from __future__ import annotations

import datetime as dt

from sqlglot import exp

from gateway.catalog import ColumnSpec, DatasetSpec
from gateway.exceptions import InvalidQuery, QueryNotSupported, UnknownColumn
from gateway.query.plan import QueryPlan


def _column(dataset_name: str, dataset: DatasetSpec, name: str) -> ColumnSpec:
    column = dataset.columns.get(name)
    if column is None:
        raise UnknownColumn(f"dataset {dataset_name!r} has no column {name!r}")
    return column


def _literal_fits(literal: exp.Expression, column: ColumnSpec) -> bool:
    if isinstance(literal, exp.Null):
        return True
    if isinstance(literal, exp.Neg):
        return column.type in ("integer", "float") and _literal_fits(literal.this, column)
    if isinstance(literal, exp.Boolean):
        return column.type == "boolean"
    if not isinstance(literal, exp.Literal):
        return False
    if column.type == "string":
        return bool(literal.is_string)
    if column.type == "integer":
        return not literal.is_string and str(literal.this).isdigit()
    if column.type == "float":
        if literal.is_string:
            return False
        try:
            float(literal.this)
        except ValueError:
            return False
        return True
    if column.type == "date":
        if not literal.is_string:
            return False
        try:
            dt.date.fromisoformat(str(literal.this))
        except ValueError:
            return False
        return True
    return False


def _check_comparisons(dataset_name: str, dataset: DatasetSpec, condition: exp.Expression) -> None:
    for node in condition.walk():
        if isinstance(node, exp.Column):
            _column(dataset_name, dataset, str(node.name))
        if not isinstance(node, exp.EQ | exp.NEQ | exp.LT | exp.LTE | exp.GT | exp.GTE | exp.In | exp.Between | exp.Is):
            continue
        operands = [node.this, node.args.get("expression"), node.args.get("low"), node.args.get("high")]
        operands += list(node.args.get("expressions") or [])
        present = [operand for operand in operands if operand is not None]
        columns = [operand for operand in present if isinstance(operand, exp.Column)]
        if len(columns) != 1:
            raise QueryNotSupported(f"each condition must compare one column with constants: {node.sql()}")
        spec = _column(dataset_name, dataset, str(columns[0].name))
        for literal in present:
            if literal is columns[0]:
                continue
            if not _literal_fits(literal, spec):
                raise InvalidQuery(
                    f"{literal.sql()} is not a valid {spec.type} constant for column {columns[0].name!r}"
                )


def validate_plan(plan: QueryPlan, dataset: DatasetSpec) -> None:
    """Raise if the plan names anything the dataset does not have, or groups on non-public keys."""
    for name in plan.group_by:
        column = _column(plan.dataset, dataset, name)
        if column.kind == "identifier":
            raise QueryNotSupported(f"grouping by identifier column {name!r} would release identifiers")
        if column.keys is None:
            raise QueryNotSupported(
                f"column {name!r} has no public keys in the catalog, so its groups cannot be released"
            )
    for aggregate in plan.aggregates:
        if aggregate.column is not None:
            _column(plan.dataset, dataset, aggregate.column)
    if plan.where is not None:
        _check_comparisons(plan.dataset, dataset, plan.where)
