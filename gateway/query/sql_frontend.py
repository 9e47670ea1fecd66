"""The SQL front door: a restricted SELECT parsed with sqlglot into a ``QueryPlan``.

Anything outside the subset is refused with a message that names the construct, rather than silently
approximated: the analyst must know exactly what was answered.
"""

from __future__ import annotations

import re

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokenizer_core import TokenType
from sqlglot.tokens import Tokenizer

from gateway.exceptions import InvalidQuery, QueryNotSupported
from gateway.query.plan import Aggregate, AggregateFunction, OutputColumn, QueryPlan

MAX_SQL_LENGTH = 10_000
MAX_NESTING = 24
"""The deepest a condition may nest (parentheses plus NOTs, signs and brackets); the parser and every later step recurse
once per level, so a deeper query would exhaust the interpreter's stack: refused up front instead."""
MAX_CONNECTIVES = 200
"""The most ANDs and ORs in one query; each makes the condition tree one level deeper."""

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

_COMPARISONS: tuple[type[exp.Expression], ...] = (exp.EQ, exp.NEQ, exp.LT, exp.LTE, exp.GT, exp.GTE)
ALIAS_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
_ALIAS = re.compile(ALIAS_PATTERN)
MAX_LIMIT_DIGITS = 12


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


def check_nesting(depth: int, connectives: int) -> None:
    if depth > MAX_NESTING:
        raise InvalidQuery(
            f"the condition nests {depth} levels deep (parentheses, NOTs, signs, brackets); at most {MAX_NESTING}"
        )
    if connectives > MAX_CONNECTIVES:
        raise InvalidQuery(f"the condition has {connectives} ANDs and ORs; at most {MAX_CONNECTIVES}")


# Tokens that each open a level of the tree however they are spaced: NOT, unary signs, brackets.
_NESTING_TOKENS = frozenset({TokenType.NOT, TokenType.DASH, TokenType.PLUS, TokenType.TILDE, TokenType.L_BRACKET})


def _check_sql_nesting(sql: str) -> None:
    """Measure nesting on the tokens, which needs no recursion, before anything builds a tree."""
    try:
        tokens = Tokenizer().tokenize(sql)
    except TokenError as exc:
        raise InvalidQuery(f"the SQL could not be parsed: {exc}") from exc
    depth = deepest = nots = connectives = 0
    for token in tokens:
        if token.token_type == TokenType.L_PAREN:
            depth += 1
            deepest = max(deepest, depth)
        elif token.token_type == TokenType.R_PAREN:
            depth -= 1
        elif token.token_type in _NESTING_TOKENS:
            nots += 1
        elif token.token_type in (TokenType.AND, TokenType.OR):
            connectives += 1
    check_nesting(deepest + nots, connectives)


def _parse_single_select(sql: str) -> exp.Select:
    if len(sql) > MAX_SQL_LENGTH:
        raise InvalidQuery(f"the query is longer than {MAX_SQL_LENGTH} characters")
    _check_sql_nesting(sql)
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
    _only(source, {"this"}, "FROM")
    _only(table, {"this", "alias"}, "FROM")
    names = {str(table.name)}
    if table.alias:
        names.add(str(table.alias))
    return str(table.name), names


# SQL aggregate -> (function, ddof). Sample forms divide by n - 1, population forms by n.
_SIMPLE_AGGREGATES: dict[type[exp.Expression], tuple[AggregateFunction, int]] = {
    exp.Sum: ("sum", 0),
    exp.Avg: ("mean", 0),
    exp.Variance: ("variance", 1),
    exp.VariancePop: ("variance", 0),
    exp.Stddev: ("stddev", 1),
    exp.StddevSamp: ("stddev", 1),
    exp.StddevPop: ("stddev", 0),
}


def _aggregate_column(argument: exp.Expression | None, table_names: set[str], function: str) -> str:
    if not isinstance(argument, exp.Column):
        what = "nothing" if argument is None else _construct_name(argument)
        raise QueryNotSupported(f"{function} takes one column, not {what}")
    return _column_name(argument, table_names)


def _quantile_alpha(node: exp.Expression | None) -> float:
    if not isinstance(node, exp.Literal) or node.is_string:
        raise QueryNotSupported("the quantile must be a number between 0 and 1")
    alpha = float(node.this)
    if not 0 < alpha < 1:
        raise InvalidQuery(f"the quantile must lie strictly between 0 and 1, got {node.this}")
    return alpha


def _aggregate(node: exp.Expression, table_names: set[str], name: str | None) -> Aggregate:
    """The plan's aggregate for a supported aggregate call; anything else is refused by name."""
    if isinstance(node, exp.Count):
        _only(node, {"this", "big_int"}, "COUNT")
        argument = node.this
        if isinstance(argument, exp.Star):
            return Aggregate(function="count", column=None, name=name or "count")
        if isinstance(argument, exp.Column):
            column = _column_name(argument, table_names)
            return Aggregate(function="count", column=column, name=name or f"count_{column}")
        if isinstance(argument, exp.Distinct):
            raise QueryNotSupported("COUNT(DISTINCT ...) is not supported")
        raise QueryNotSupported(f"COUNT over a {_construct_name(argument)} is not supported")
    simple = _SIMPLE_AGGREGATES.get(type(node))
    if simple is not None:
        function, ddof = simple
        _only(node, {"this"}, node.key.upper())
        column = _aggregate_column(node.this, table_names, node.key.upper())
        return Aggregate(function=function, column=column, name=name or f"{function}_{column}", ddof=ddof)
    if isinstance(node, exp.Median):
        _only(node, {"this"}, "MEDIAN")
        column = _aggregate_column(node.this, table_names, "MEDIAN")
        return Aggregate(function="quantile", column=column, name=name or f"median_{column}", alpha=0.5)
    if isinstance(node, exp.Quantile):
        _only(node, {"this", "quantile"}, "QUANTILE")
        column = _aggregate_column(node.this, table_names, "QUANTILE")
        alpha = _quantile_alpha(node.args.get("quantile"))
        return Aggregate(function="quantile", column=column, name=name or f"quantile_{column}", alpha=alpha)
    if isinstance(node, exp.WithinGroup) and isinstance(node.this, exp.PercentileCont):
        _only(node.this, {"this"}, "PERCENTILE_CONT")
        order = node.expression
        if not isinstance(order, exp.Order) or len(order.expressions) != 1:
            raise QueryNotSupported("PERCENTILE_CONT needs WITHIN GROUP (ORDER BY <one column>)")
        ordered = order.expressions[0]
        _only(ordered, {"this", "nulls_first"}, "PERCENTILE_CONT")
        column = _aggregate_column(ordered.this, table_names, "PERCENTILE_CONT")
        alpha = _quantile_alpha(node.this.this)
        return Aggregate(function="quantile", column=column, name=name or f"quantile_{column}", alpha=alpha)
    if isinstance(node, exp.WithinGroup):
        raise QueryNotSupported(f"{_construct_name(node.this)} WITHIN GROUP is not supported; PERCENTILE_CONT is")
    if isinstance(node, exp.AggFunc):
        raise QueryNotSupported(f"{_construct_name(node)} is not supported")
    raise QueryNotSupported(f"{_construct_name(node)} in the select list is not supported")


def _only(node: exp.Expression, allowed: set[str], where: str) -> None:
    """Refuse any populated part of ``node`` that the plan would otherwise silently drop."""
    for part, value in node.args.items():
        if value and part not in allowed:
            raise QueryNotSupported(f"{part.replace('_', ' ').upper()} in {where} is not supported")


def _is_constant(node: exp.Expression) -> bool:
    if isinstance(node, exp.Neg):
        return isinstance(node.this, exp.Literal) and not node.this.is_string
    return isinstance(node, exp.Literal | exp.Null | exp.Boolean)


def _check_predicate(node: exp.Expression, table_names: set[str]) -> None:
    """A WHERE condition is boolean logic over predicates, and each predicate compares exactly one
    column with constants. Nothing else is accepted: in particular no bare column used as a boolean,
    whose per-row conversion could fail for some rows only and so turn an error into an answer."""
    if isinstance(node, exp.Paren):
        _check_predicate(node.this, table_names)
        return
    if isinstance(node, exp.And | exp.Or):
        _check_predicate(node.this, table_names)
        _check_predicate(node.expression, table_names)
        return
    if isinstance(node, exp.Not):
        _check_predicate(node.this, table_names)
        return
    if isinstance(node, exp.Boolean):
        return
    if isinstance(node, _COMPARISONS):
        _only(node, {"this", "expression"}, "WHERE")
        operands = [node.this, node.expression]
    elif isinstance(node, exp.In):
        if node.args.get("query") is not None:
            raise QueryNotSupported("subquery in WHERE is not supported")
        _only(node, {"this", "expressions"}, "WHERE")
        operands = [node.this, *node.expressions]
    elif isinstance(node, exp.Between):
        _only(node, {"this", "low", "high"}, "WHERE")
        operands = [node.this, node.args["low"], node.args["high"]]
    elif isinstance(node, exp.Is):
        if not isinstance(node.expression, exp.Null):
            raise QueryNotSupported("only IS NULL and IS NOT NULL are supported")
        operands = [node.this]
    else:
        raise QueryNotSupported(f"{_construct_name(node)} in WHERE is not supported")
    for operand in operands:
        if not isinstance(operand, exp.Column) and not _is_constant(operand):
            raise QueryNotSupported(f"{_construct_name(operand)} in WHERE is not supported")
    columns = [operand for operand in operands if isinstance(operand, exp.Column)]
    if len(columns) != 1:
        raise QueryNotSupported(f"each condition must compare one column with constants: {node.sql()}")
    _column_name(columns[0], table_names)


def check_condition(condition: exp.Expression) -> None:
    """The WHERE grammar, for conditions built by another front door (the JSON plan)."""
    _check_predicate(condition, set())


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
    _only(limit, {"expression"}, "LIMIT")
    value = limit.expression
    if not isinstance(value, exp.Literal) or value.is_string or not str(value.this).isdigit():
        raise QueryNotSupported("LIMIT must be a non-negative integer")
    if len(str(value.this)) > MAX_LIMIT_DIGITS:
        raise InvalidQuery(f"LIMIT may have at most {MAX_LIMIT_DIGITS} digits")
    return int(value.this)


def parse_sql(sql: str) -> QueryPlan:
    """Parse ``sql`` into a plan. Checks the shape only; names are checked against the catalog later."""
    try:
        return _plan(sql)
    except RecursionError as exc:
        # The nesting limits are meant to keep every query far from this; a shape they do not foresee
        # is still a refused query, not a crash.
        raise InvalidQuery("the query is nested too deeply") from exc


def _plan(sql: str) -> QueryPlan:
    statement = _parse_single_select(sql)
    dataset, table_names = _table(statement)

    group_by: list[str] = []
    group = statement.args.get("group")
    if group is not None:
        _only(group, {"expressions"}, "GROUP BY")
        for node in group.expressions:
            if not isinstance(node, exp.Column):
                raise QueryNotSupported(f"GROUP BY on a {_construct_name(node)} is not supported; name columns")
            name = _column_name(node, table_names)
            if name in group_by:
                raise InvalidQuery(f"column {name!r} appears twice in GROUP BY")
            group_by.append(name)

    outputs: list[OutputColumn] = []
    aggregates: list[Aggregate] = []
    for item in statement.expressions:
        alias = str(item.alias) if isinstance(item, exp.Alias) else None
        if alias is not None and not _ALIAS.fullmatch(alias):
            raise InvalidQuery(f"alias {alias!r} must be a plain name (letters, digits, underscore)")
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
        aggregate = _aggregate(node, table_names, alias)
        aggregates.append(aggregate)
        outputs.append(OutputColumn(name=aggregate.name, kind="aggregate"))
    if not aggregates:
        raise QueryNotSupported("the query must compute at least one aggregate such as COUNT(*)")
    unselected = [name for name in group_by if name not in {o.name for o in outputs if o.kind == "group"}]
    if unselected:
        raise QueryNotSupported(
            f"GROUP BY column {unselected[0]!r} must also be selected, or the rows could not be told apart"
        )
    names = [output.name for output in outputs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InvalidQuery(f"output column names must be unique; repeated: {', '.join(duplicates)}")

    where = statement.args.get("where")
    condition = None
    if where is not None:
        _check_predicate(where.this, table_names)
        condition = _unqualify(where.this)

    order_by: list[tuple[str, bool]] = []
    order = statement.args.get("order")
    if order is not None:
        _only(order, {"expressions"}, "ORDER BY")
        for ordered in order.expressions:
            _only(ordered, {"this", "desc", "nulls_first"}, "ORDER BY")
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
