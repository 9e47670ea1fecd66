"""The SQL front door: a restricted SELECT parsed with sqlglot into a ``QueryPlan``.

Anything outside the subset is refused with a message that names the construct, rather than silently
approximated: the analyst must know exactly what was answered.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from gateway.exceptions import InvalidQuery, QueryNotSupported
from gateway.query.plan import Aggregate, OutputColumn, QueryPlan

MAX_SQL_LENGTH = 10_000

# Top-level SELECT parts the subset accepts; every other populated part is refused by name.
_ALLOWED_PARTS = {"expressions", "from_", "where", "group", "order", "limit", "kind"}
_PART_NAMES = {
    "distinct": "DISTINCT",
    "having": "HAVING",
    "joins": "JOIN",
    "with_": "WITH (common table expressions)",
    "with": "WITH (common table expressions)",
    "offset": "OFFSET",
    "qualify": "QUALIFY",
    "windows": "WINDOW",
    "laterals": "LATERAL",
    "pivots": "PIVOT",
    "sample": "TABLESAMPLE",
    "into": "SELECT INTO",
    "locks": "FOR UPDATE",
    "settings": "SETTINGS",
    "format": "FORMAT",
}

# Node types a WHERE condition may be built from.
_CONDITION_NODES: tuple[type[exp.Expression], ...] = (
    exp.And,
    exp.Or,
    exp.Not,
    exp.Paren,
    exp.EQ,
    exp.NEQ,
    exp.LT,
    exp.LTE,
    exp.GT,
    exp.GTE,
    exp.In,
    exp.Between,
    exp.Is,
    exp.Column,
    exp.Identifier,
    exp.Literal,
    exp.Null,
    exp.Boolean,
    exp.Neg,
)


def _construct_name(node: exp.Expression) -> str:
    if isinstance(node, exp.Select | exp.Subquery):
        return "subquery"
    if isinstance(node, exp.Window):
        return "window function"
    if isinstance(node, exp.Star):
        return "SELECT *"
    if isinstance(node, exp.AggFunc):
        return f"aggregate {node.key.upper()}"
    if isinstance(node, exp.Func):
        return f"function {node.sql_name()}"
    if isinstance(node, exp.Binary):
        return f"operator {node.key.upper()}"
    return node.key.upper()


def _column_name(node: exp.Column, table_names: set[str]) -> str:
    if node.table and node.table not in table_names:
        raise QueryNotSupported(f"column {node.sql()} refers to a table other than the one queried")
    if node.args.get("db") or node.args.get("catalog"):
        raise QueryNotSupported(f"column {node.sql()} may not be qualified by schema or catalog")
    return str(node.name)


def _parse_single_select(sql: str) -> exp.Select:
    if len(sql) > MAX_SQL_LENGTH:
        raise InvalidQuery(f"the query is longer than {MAX_SQL_LENGTH} characters")
    try:
        statements = [s for s in sqlglot.parse(sql) if s is not None]
    except ParseError as exc:
        first = exc.errors[0]["description"] if exc.errors else str(exc)
        raise InvalidQuery(f"the SQL could not be parsed: {first}") from exc
    if len(statements) != 1:
        raise QueryNotSupported(f"exactly one statement is answered, got {len(statements)}")
    statement = statements[0]
    if isinstance(statement, exp.SetOperation):
        raise QueryNotSupported(f"set operation {statement.key.upper()} is not supported")
    if not isinstance(statement, exp.Select):
        raise QueryNotSupported(f"only SELECT is answered, not {statement.key.upper()}")
    for part, value in statement.args.items():
        if value and part not in _ALLOWED_PARTS:
            raise QueryNotSupported(f"{_PART_NAMES.get(part, part.upper())} is not supported")
    return statement


def _table(statement: exp.Select) -> tuple[str, set[str]]:
    source = statement.args.get("from_")
    if source is None:
        raise QueryNotSupported("a FROM clause naming one dataset is required")
    table = source.this
    if not isinstance(table, exp.Table) or not isinstance(table.this, exp.Identifier):
        raise QueryNotSupported(f"FROM must name a dataset, not a {_construct_name(table)}")
    if table.args.get("db") or table.args.get("catalog"):
        raise QueryNotSupported("FROM must name a dataset without a schema")
    names = {str(table.name)}
    if table.alias:
        names.add(str(table.alias))
    return str(table.name), names


def _aggregate(node: exp.Expression, table_names: set[str]) -> tuple[str, str | None]:
    """(function, column) for a supported aggregate call, else refuse naming what was found."""
    if isinstance(node, exp.Count):
        argument = node.this
        if isinstance(argument, exp.Star):
            return "count", None
        if isinstance(argument, exp.Column):
            return "count", _column_name(argument, table_names)
        if isinstance(argument, exp.Distinct):
            raise QueryNotSupported("COUNT(DISTINCT ...) is not supported")
        raise QueryNotSupported(f"COUNT over a {_construct_name(argument)} is not supported")
    if isinstance(node, exp.AggFunc):
        raise QueryNotSupported(f"aggregate {node.key.upper()} is not supported yet; COUNT is")
    raise QueryNotSupported(f"{_construct_name(node)} in the select list is not supported")


def _check_condition(node: exp.Expression, table_names: set[str]) -> set[str]:
    """Refuse anything but comparisons, IN, BETWEEN, IS NULL and boolean logic; return columns used."""
    columns: set[str] = set()
    for child in node.walk():
        if not isinstance(child, exp.Expression):
            raise QueryNotSupported(f"{child!r} in WHERE is not supported")
        if isinstance(child, exp.Column):
            columns.add(_column_name(child, table_names))
        elif not isinstance(child, _CONDITION_NODES):
            raise QueryNotSupported(f"{_construct_name(child)} in WHERE is not supported")
    return columns


def _unqualify(node: exp.Expression) -> exp.Expression:
    def strip(child: exp.Expression) -> exp.Expression:
        if isinstance(child, exp.Column):
            return exp.column(child.name)
        return child

    return node.copy().transform(strip)


def _limit(statement: exp.Select) -> int | None:
    limit = statement.args.get("limit")
    if limit is None:
        return None
    value = limit.expression
    if not isinstance(value, exp.Literal) or value.is_string or not str(value.this).isdigit():
        raise QueryNotSupported("LIMIT must be a non-negative integer")
    return int(value.this)


def parse_sql(sql: str) -> QueryPlan:
    """Parse ``sql`` into a plan. Checks the shape only; names are checked against the catalog later."""
    statement = _parse_single_select(sql)
    dataset, table_names = _table(statement)

    group_by: list[str] = []
    group = statement.args.get("group")
    if group is not None:
        for node in group.expressions:
            if not isinstance(node, exp.Column):
                raise QueryNotSupported(f"GROUP BY on a {_construct_name(node)} is not supported; name columns")
            group_by.append(_column_name(node, table_names))

    outputs: list[OutputColumn] = []
    aggregates: list[Aggregate] = []
    for item in statement.expressions:
        alias = str(item.alias) if isinstance(item, exp.Alias) else None
        node = item.this if isinstance(item, exp.Alias) else item
        if isinstance(node, exp.Column):
            name = _column_name(node, table_names)
            if name not in group_by:
                raise QueryNotSupported(
                    f"column {name!r} is selected without an aggregate; row-level selects are not answered, "
                    "group by it or aggregate it"
                )
            if alias is not None and alias != name:
                raise QueryNotSupported("renaming a grouping column is not supported")
            outputs.append(OutputColumn(name=name, kind="group"))
            continue
        if isinstance(node, exp.Star):
            raise QueryNotSupported("SELECT * is not supported; row-level selects are not answered")
        function, column = _aggregate(node, table_names)
        default = function if column is None else f"{function}_{column}"
        aggregate = Aggregate(function="count", column=column, name=alias or default)
        aggregates.append(aggregate)
        outputs.append(OutputColumn(name=aggregate.name, kind="aggregate"))
    if not aggregates:
        raise QueryNotSupported("the query must compute at least one aggregate such as COUNT(*)")
    names = [output.name for output in outputs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InvalidQuery(f"output column names must be unique; repeated: {', '.join(duplicates)}")

    where = statement.args.get("where")
    condition = None
    if where is not None:
        _check_condition(where.this, table_names)
        condition = _unqualify(where.this)

    order_by: list[tuple[str, bool]] = []
    order = statement.args.get("order")
    if order is not None:
        for ordered in order.expressions:
            target = ordered.this
            if not isinstance(target, exp.Column) or target.name not in names:
                raise QueryNotSupported("ORDER BY may only name output columns")
            order_by.append((str(target.name), bool(ordered.args.get("desc"))))

    return QueryPlan(
        dataset=dataset,
        group_by=tuple(group_by),
        aggregates=tuple(aggregates),
        outputs=tuple(outputs),
        where=condition,
        order_by=tuple(order_by),
        limit=_limit(statement),
    )
