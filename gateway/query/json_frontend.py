"""The JSON front door: a structured plan for programmatic clients, with the SQL subset's expressiveness.

It becomes the same ``QueryPlan`` as SQL does, its conditions the same expression tree, checked by the
same grammar; nothing downstream can tell the two doors apart, so they cannot drift apart either.

    {"dataset": "residents",
     "group_by": ["wijk"],
     "aggregates": [{"function": "count"}, {"function": "mean", "column": "income", "alias": "mean_income"}],
     "where": {"and": [{"column": "birth_year", "op": ">=", "value": 1960},
                       {"column": "sex", "op": "in", "values": ["V"]}]},
     "order_by": [{"column": "mean_income", "descending": true}],
     "limit": 5}
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator
from sqlglot import exp

from gateway.exceptions import InvalidQuery, QueryNotSupported
from gateway.query.plan import Aggregate, AggregateFunction, OutputColumn, QueryPlan
from gateway.query.sql_frontend import ALIAS_PATTERN, MAX_LIMIT_DIGITS, check_condition, check_nesting

Name = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")]
# Strict, so that JSON 1 stays the integer 1 (a lax union would read it as true) and 1.5 stays a float.
Scalar = Annotated[
    StrictStr | StrictBool | StrictInt | Annotated[float, Field(strict=True, allow_inf_nan=False)] | None,
    Field(union_mode="left_to_right"),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Comparison(_Model):
    column: Name
    op: Literal["=", "!=", "<", "<=", ">", ">="]
    value: Scalar


class Membership(_Model):
    column: Name
    op: Literal["in"]
    values: Annotated[list[Scalar], Field(min_length=1, max_length=1000)]


class Range(_Model):
    column: Name
    op: Literal["between"]
    low: Scalar
    high: Scalar


class Nullness(_Model):
    column: Name
    op: Literal["is_null", "is_not_null"]


class AllOf(_Model):
    and_: Annotated[list[Condition], Field(alias="and", min_length=1)]


class AnyOf(_Model):
    or_: Annotated[list[Condition], Field(alias="or", min_length=1)]


class NoneOf(_Model):
    not_: Annotated[Condition, Field(alias="not")]


Condition = Union[Comparison, Membership, Range, Nullness, AllOf, AnyOf, NoneOf]  # noqa: UP007 - recursive alias


class PlanAggregate(_Model):
    function: Literal["count", "sum", "mean", "variance", "stddev", "median", "quantile"]
    column: Name | None = None
    alias: Annotated[str, Field(pattern=ALIAS_PATTERN)] | None = None
    alpha: Annotated[float, Field(gt=0, lt=1)] | None = None
    sample: bool = True
    """variance/stddev: divide by n - 1 (sample, SQL's VARIANCE) or by n (population)."""


class PlanOrder(_Model):
    column: Name
    descending: bool = False


def measure_condition(raw: object) -> tuple[int, int]:
    """(nesting depth, number of and/or operands) of a raw condition, without recursion."""
    deepest = connectives = 0
    pending: list[tuple[object, int]] = [(raw, 0)]
    while pending:
        node, depth = pending.pop()
        if not isinstance(node, dict):
            continue
        deepest = max(deepest, depth)
        for key in ("and", "or"):
            parts = node.get(key)
            if isinstance(parts, list):
                connectives += max(len(parts) - 1, 0)
                pending.extend((part, depth + 1) for part in parts)
        if "not" in node:
            pending.append((node["not"], depth + 1))
    return deepest, connectives


MAX_CONDITION_VALUES = 2_000
"""The most constants a plan's condition may hold: with the body limit, planning stays in milliseconds
and megabytes (a plan of 201 IN lists of 1,000 values took 4.4 s and 650 MB)."""


def count_values(raw: object) -> int:
    """The constants of a raw condition (IN lists count each value), without recursion."""
    total = 0
    pending: list[object] = [raw]
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, dict):
            values = node.get("values")
            total += len(values) if isinstance(values, list) else 1
            pending.extend(value for key, value in node.items() if key in ("and", "or", "not"))
    return total


class JsonPlan(_Model):
    dataset: Name
    group_by: Annotated[list[Name], Field(max_length=8)] = []
    aggregates: Annotated[list[PlanAggregate], Field(min_length=1, max_length=32)]
    where: Condition | None = None
    order_by: list[PlanOrder] = []
    limit: Annotated[int, Field(ge=0, lt=10**MAX_LIMIT_DIGITS)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _not_too_deep(cls, raw: object) -> object:
        """Checked on the raw document, before validation recurses into it."""
        if isinstance(raw, dict) and "where" in raw:
            check_nesting(*measure_condition(raw["where"]))
            values = count_values(raw["where"])
            if values > MAX_CONDITION_VALUES:
                raise InvalidQuery(f"the condition holds {values} values; at most {MAX_CONDITION_VALUES}")
        return raw


for _model in (AllOf, AnyOf, NoneOf, JsonPlan):
    _model.model_rebuild()


def _literal(value: str | bool | int | float | None) -> exp.Expression:
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, str):
        return exp.Literal.string(value)
    if value < 0:
        return exp.Neg(this=exp.Literal.number(repr(-value)))
    return exp.Literal.number(repr(value))


_COMPARISON_NODES: dict[str, type[exp.Expression]] = {
    "=": exp.EQ,
    "!=": exp.NEQ,
    "<": exp.LT,
    "<=": exp.LTE,
    ">": exp.GT,
    ">=": exp.GTE,
}


def _grouped(node: exp.Expression) -> exp.Expression:
    return exp.Paren(this=node) if isinstance(node, exp.Connector) else node


def condition_expression(condition: Condition) -> exp.Expression:
    if isinstance(condition, AllOf | AnyOf):
        operands = condition.and_ if isinstance(condition, AllOf) else condition.or_
        parts = [condition_expression(part) for part in operands]
        node = exp.And if isinstance(condition, AllOf) else exp.Or
        # A chain of one connective needs no parentheses (each would make the tree a level deeper);
        # an operand that is itself a connective gets them, so the SQL text reads as the tree.
        combined = _grouped(parts[0])
        for part in parts[1:]:
            combined = node(this=combined, expression=_grouped(part))
        return combined
    if isinstance(condition, NoneOf):
        return exp.Not(this=exp.Paren(this=condition_expression(condition.not_)))
    column = exp.column(condition.column)
    if isinstance(condition, Comparison):
        return _COMPARISON_NODES[condition.op](this=column, expression=_literal(condition.value))
    if isinstance(condition, Membership):
        return exp.In(this=column, expressions=[_literal(value) for value in condition.values])
    if isinstance(condition, Range):
        return exp.Between(this=column, low=_literal(condition.low), high=_literal(condition.high))
    is_null = exp.Is(this=column, expression=exp.Null())
    return is_null if condition.op == "is_null" else exp.Not(this=is_null)


_MOMENTS: dict[str, AggregateFunction] = {"sum": "sum", "mean": "mean", "variance": "variance", "stddev": "stddev"}


def _aggregate(item: PlanAggregate) -> Aggregate:
    function = item.function
    if function == "count":
        name = item.alias or ("count" if item.column is None else f"count_{item.column}")
        return Aggregate(function="count", column=item.column, name=name)
    if item.column is None:
        raise QueryNotSupported(f"{function} needs a column")
    if function in ("median", "quantile"):
        alpha = 0.5 if function == "median" else item.alpha
        if alpha is None:
            raise InvalidQuery("a quantile needs alpha, strictly between 0 and 1")
        default = f"{'median' if function == 'median' else 'quantile'}_{item.column}"
        return Aggregate(function="quantile", column=item.column, name=item.alias or default, alpha=alpha)
    return Aggregate(
        function=_MOMENTS[function],
        column=item.column,
        name=item.alias or f"{function}_{item.column}",
        ddof=1 if item.sample and function in ("variance", "stddev") else 0,
    )


def plan_from_json(plan: JsonPlan) -> QueryPlan:
    """The internal plan for a JSON plan; names are checked against the catalog later, as for SQL."""
    if len(set(plan.group_by)) != len(plan.group_by):
        raise InvalidQuery("a column appears twice in group_by")
    aggregates = tuple(_aggregate(item) for item in plan.aggregates)
    outputs = tuple(
        [OutputColumn(name=name, kind="group") for name in plan.group_by]
        + [OutputColumn(name=aggregate.name, kind="aggregate") for aggregate in aggregates]
    )
    names = [output.name for output in outputs]
    if len(set(names)) != len(names):
        raise InvalidQuery("output column names must be unique; give aliases")
    where = None
    if plan.where is not None:
        where = condition_expression(plan.where)
        check_condition(where)
    for order in plan.order_by:
        if order.column not in names:
            raise QueryNotSupported("order_by may only name output columns")
    return QueryPlan(
        dataset=plan.dataset,
        group_by=tuple(plan.group_by),
        aggregates=aggregates,
        outputs=outputs,
        where=where,
        order_by=tuple((order.column, order.descending) for order in plan.order_by),
        limit=plan.limit,
    )
