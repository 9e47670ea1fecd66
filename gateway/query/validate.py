"""Checking a plan against the catalog: every name must exist and every literal must fit its column."""

from __future__ import annotations

import datetime as dt
import math
import re

from sqlglot import exp

from gateway.data.catalog import ColumnSpec, DatasetSpec
from gateway.exceptions import InvalidQuery, QueryNotSupported, UnknownColumn
from gateway.query.plan import QueryPlan
from gateway.query.statistics import display


def _column(dataset_name: str, dataset: DatasetSpec, name: str) -> ColumnSpec:
    column = dataset.columns.get(name)
    if column is None:
        raise UnknownColumn(f"dataset {dataset_name!r} has no column {name!r}")
    return column


_INT64_MAX = 2**63 - 1
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _literal_fits(literal: exp.Expression, column: ColumnSpec) -> bool:
    """Does the constant have the column's type and fit the source's representation of it?

    Strict on purpose: a constant the source cannot convert would fail the query, and an error must
    never depend on the data."""
    if isinstance(literal, exp.Null):
        return True
    if isinstance(literal, exp.Boolean):
        return column.type == "boolean"
    negative = isinstance(literal, exp.Neg)
    if negative:
        literal = literal.this
    if not isinstance(literal, exp.Literal):
        return False
    text = str(literal.this)
    if column.type == "string":
        return bool(literal.is_string) and not negative
    if literal.is_string:
        if column.type != "date" or negative or not _ISO_DATE.fullmatch(text):
            return False
        try:
            dt.date.fromisoformat(text)
        except ValueError:
            return False
        return True
    if column.type == "integer":
        return text.isdigit() and int(text) <= _INT64_MAX + (1 if negative else 0)
    if column.type == "float":
        try:
            return math.isfinite(float(text))
        except ValueError:
            return False
    return False


def check_condition_columns(dataset_name: str, dataset: DatasetSpec, condition: exp.Expression) -> None:
    """Every column exists and every constant fits the column it is compared with. The parser has
    already made sure each predicate holds exactly one column and otherwise constants."""
    for node in condition.walk():
        if not isinstance(node, exp.Column):
            continue
        spec = _column(dataset_name, dataset, str(node.name))
        predicate = node.parent
        if predicate is None:
            continue
        for constant in predicate.iter_expressions():
            if constant is node or not isinstance(constant, exp.Expression):
                continue
            if not _literal_fits(constant, spec):
                raise InvalidQuery(f"{constant.sql()} is not a valid {spec.type} constant for column {node.name!r}")


def validate_plan(plan: QueryPlan, dataset: DatasetSpec) -> None:
    """Raise if the plan names anything the dataset does not have, or groups by a column it cannot.

    A grouping column without public keys is allowed: its groups are released through DP partition
    selection (``anonymization.KeySelection``), never as the raw set of values present."""
    for name in plan.group_by:
        column = _column(plan.dataset, dataset, name)
        if column.kind == "identifier" or name == dataset.privacy_unit:
            raise QueryNotSupported(
                f"grouping by identifier column {display(dataset, name)!r} would release identifiers"
            )
        if column.type == "float":
            # A float's text form differs between sources (2.0 in DuckDB, 2 in PostgreSQL), and a
            # continuous value makes a poor group; the catalog can declare a binned column instead.
            raise QueryNotSupported(
                f"grouping by float column {display(dataset, name)!r} is not supported; group by a category "
                "(CASE WHEN ... THEN 'band' ...)"
            )
    for aggregate in plan.aggregates:
        if aggregate.column is not None:
            _column(plan.dataset, dataset, aggregate.column)
    if plan.where is not None:
        check_condition_columns(plan.dataset, dataset, plan.where)
    for derived in plan.derived:
        for node in derived.expression.find_all(exp.Column):
            _column(plan.dataset, dataset, str(node.name))
        for branch in derived.expression.find_all(exp.If):
            check_condition_columns(plan.dataset, dataset, branch.this)
