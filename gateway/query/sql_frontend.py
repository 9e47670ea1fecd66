"""The SQL front door: a restricted SELECT parsed with sqlglot into a ``QueryPlan``.

Anything outside the subset is refused with a message that names the construct, rather than silently
approximated: the analyst must know exactly what was answered.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Literal, Protocol

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokenizer_core import TokenType
from sqlglot.tokens import Tokenizer

from gateway.exceptions import InvalidQuery, QueryNotSupported, UnknownColumn
from gateway.query.expressions import (
    check_post_expression,
    check_row_expression,
    construct_name,
    is_constant,
)
from gateway.query.plan import Aggregate, AggregateFunction, Derived, OutputColumn, QueryPlan, TableRef

MAX_SQL_LENGTH = 10_000
MAX_NESTING = 24
"""The deepest a condition may nest (parentheses plus NOTs, signs and brackets); the parser and every later step recurse
once per level, so a deeper query would exhaust the interpreter's stack: refused up front instead."""
MAX_CONNECTIVES = 200
"""The most ANDs and ORs in one query; each makes the condition tree one level deeper."""

# Top-level SELECT parts the subset accepts; every other populated part is refused by name.
_ALLOWED_PARTS = {"expressions", "from_", "where", "group", "order", "limit", "kind", "joins", "having"}
_PART_NAMES = {
    "distinct": "DISTINCT",
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
_TOP = re.compile(r"^(\s*SELECT\s+)TOP\s+(\d{1,12})\s", re.IGNORECASE)
ALIAS_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
_ALIAS = re.compile(ALIAS_PATTERN)
MAX_LIMIT_DIGITS = 12


def _construct_name(node: exp.Expression) -> str:
    return construct_name(node)


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


class Names(Protocol):
    """What the front door needs to know of the catalog: a dataset's columns (None: no such dataset)
    and whether it is a public reference table. Only for joins, whose columns may be unqualified."""

    def columns(self, dataset: str) -> Collection[str] | None: ...

    def is_public(self, dataset: str) -> bool: ...


@dataclass
class _Scope:
    """The tables of a query and how its column references become flat names."""

    tables: list[TableRef]
    names: Names | None
    renames: dict[str, str] = field(default_factory=dict)
    """Output name of a flattened subquery -> the column it renames."""
    closed: bool = False
    """A flattened subquery that selects only the columns it names."""

    @property
    def single(self) -> bool:
        return len(self.tables) == 1

    def flat(self, node: exp.Column) -> str:
        if node.args.get("db") or node.args.get("catalog"):
            raise QueryNotSupported(f"column {node.sql()} may not be qualified by schema or catalog")
        qualifier, name = (str(node.table) if node.table else None), str(node.name)
        if self.single:
            table = self.tables[0]
            if qualifier is not None and qualifier not in (table.alias, table.dataset):
                raise QueryNotSupported(f"column {node.sql()} refers to a table other than the one queried")
            if self.closed and name not in self.renames:
                raise UnknownColumn(f"the subquery in FROM does not select a column {name!r}")
            return self.renames.get(name, name)
        if qualifier is not None:
            named = next((table for table in self.tables if table.alias == qualifier), None)
            if named is None:
                raise QueryNotSupported(f"column {node.sql()} refers to a table that is not in the query")
            return f"{named.alias}.{name}"
        if self.names is None:
            raise QueryNotSupported(f"in a join, qualify column {name!r} with its table")
        holders = [table for table in self.tables if name in (self.names.columns(table.dataset) or ())]
        if not holders:
            raise UnknownColumn(f"no table of the query has a column {name!r}")
        if len(holders) > 1:
            raise InvalidQuery(f"column {name!r} is in more than one table of the query; qualify it")
        return f"{holders[0].alias}.{name}"

    def table_of(self, flat: str) -> TableRef:
        if self.single:
            return self.tables[0]
        alias = flat.split(".", 1)[0]
        return next(table for table in self.tables if table.alias == alias)

    def is_public(self, table: TableRef) -> bool:
        return self.names is not None and self.names.is_public(table.dataset)


def _named_table(node: exp.Expression, where: str) -> tuple[str, str]:
    if not isinstance(node, exp.Table) or not isinstance(node.this, exp.Identifier):
        raise QueryNotSupported(f"{where} must name a dataset, not a {_construct_name(node)}")
    if node.args.get("db") or node.args.get("catalog"):
        raise QueryNotSupported(f"{where} must name a dataset without a schema")
    _only(node, {"this", "alias"}, where)
    return str(node.name), str(node.alias) if node.alias else str(node.name)


def _flattened(subquery: exp.Subquery) -> tuple[str, str, dict[str, str], bool, exp.Expression | None]:
    """A subquery in FROM that only renames or filters: (dataset, alias, renames, whether it selects
    every column, its condition)."""
    inner = subquery.this
    if not isinstance(inner, exp.Select):
        raise QueryNotSupported("a subquery in FROM must be a SELECT")
    for part, value in inner.args.items():
        if value and part not in {"expressions", "from_", "where", "kind"}:
            raise QueryNotSupported(
                f"a subquery in FROM may only select, rename and filter columns; {part.upper()} is not supported"
            )
    source = inner.args.get("from_")
    if source is None or not isinstance(source.this, exp.Table):
        raise QueryNotSupported("a subquery in FROM must read one dataset")
    dataset, alias = _named_table(source.this, "FROM")
    renames: dict[str, str] = {}
    star = False
    for item in inner.expressions:
        node = item.this if isinstance(item, exp.Alias) else item
        if isinstance(node, exp.Star):
            star = True
            continue
        if not isinstance(node, exp.Column) or (node.table and str(node.table) not in (alias, dataset)):
            raise QueryNotSupported("a subquery in FROM may only select, rename and filter columns")
        renames[str(item.alias) if isinstance(item, exp.Alias) else str(node.name)] = str(node.name)
    if not star and not renames:  # pragma: no cover - a SELECT always has an expression
        raise QueryNotSupported("a subquery in FROM must select columns")
    where = inner.args.get("where")
    condition = None
    if where is not None:
        scope = _Scope([TableRef(dataset, alias)], None)
        _check_predicate(where.this, scope)
        condition = _flatten(where.this, scope)
    outer_alias = str(subquery.alias) if subquery.alias else dataset
    return dataset, outer_alias, renames, star, condition


def _scope(statement: exp.Select, names: Names | None) -> tuple[_Scope, exp.Expression | None]:
    """The query's tables (FROM and its joins) and the condition of a flattened subquery, if any."""
    source = statement.args.get("from_")
    if source is None:
        raise QueryNotSupported("a FROM clause naming one dataset is required")
    _only(source, {"this"}, "FROM")
    inner_condition = None
    renames: dict[str, str] = {}
    closed = False
    if isinstance(source.this, exp.Subquery):
        if statement.args.get("joins"):
            raise QueryNotSupported("a subquery in FROM cannot be joined; join the datasets themselves")
        dataset, alias, renames, star, inner_condition = _flattened(source.this)
        closed = not star
    else:
        dataset, alias = _named_table(source.this, "FROM")
    scope = _Scope([TableRef(dataset, alias)], names, renames, closed)
    for join in statement.args.get("joins") or []:
        _only(join, {"this", "on", "side", "kind"}, "JOIN")
        side, kind = join.args.get("side"), join.args.get("kind")
        how: Literal["inner", "left"]
        if side is None and kind in (None, "INNER"):
            how = "inner"
        elif str(side).upper() == "LEFT" and kind in (None, "OUTER"):
            how = "left"
        else:
            raise QueryNotSupported(
                f"{' '.join(str(p) for p in (side, kind) if p)} JOIN is not supported; INNER and LEFT are"
            )
        joined, joined_alias = _named_table(join.this, "JOIN")
        if any(table.alias == joined_alias for table in scope.tables):
            raise InvalidQuery(f"table alias {joined_alias!r} is used twice; give each table its own alias")
        scope.tables.append(TableRef(joined, joined_alias, how))
        condition = join.args.get("on")
        if condition is None:
            raise QueryNotSupported(
                "a JOIN without a condition (a cross join) is not supported; join ON the privacy unit"
            )
        if not (
            isinstance(condition, exp.EQ)
            and isinstance(condition.this, exp.Column)
            and isinstance(condition.expression, exp.Column)
        ):
            raise QueryNotSupported(
                "a join's condition must be one equality of two columns (ON a.person_id = b.person_id)"
            )
        first, second = scope.flat(condition.this), scope.flat(condition.expression)
        if scope.table_of(second).alias != joined_alias:
            first, second = second, first
        if scope.table_of(second).alias != joined_alias or scope.table_of(first).alias == joined_alias:
            raise QueryNotSupported(
                f"the join of {joined_alias!r} must compare one of its columns with an earlier table's"
            )
        scope.tables[-1] = TableRef(joined, joined_alias, how, (first, second))
    return scope, inner_condition


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
# Other engines' names for them (T-SQL and others): VAR and STDEV are the sample forms, VARP and STDEVP
# the population forms.
_ALIASES: dict[str, tuple[AggregateFunction, int]] = {
    "VAR": ("variance", 1),
    "VARP": ("variance", 0),
    "STDEV": ("stddev", 1),
    "STDEVP": ("stddev", 0),
    "MEAN": ("mean", 0),
}


def _is_aggregate(node: exp.Expression) -> bool:
    if isinstance(node, exp.AggFunc | exp.WithinGroup):
        return True
    return isinstance(node, exp.Anonymous) and str(node.this).upper() in _ALIASES


def _quantile_alpha(node: exp.Expression | None) -> float:
    if not isinstance(node, exp.Literal) or node.is_string:
        raise QueryNotSupported("the quantile must be a number between 0 and 1")
    alpha = float(node.this)
    if not 0 < alpha < 1:
        raise InvalidQuery(f"the quantile must lie strictly between 0 and 1, got {node.this}")
    return alpha


def _only(node: exp.Expression, allowed: set[str], where: str) -> None:
    """Refuse any populated part of ``node`` that the plan would otherwise silently drop."""
    for part, value in node.args.items():
        if value and part not in allowed:
            raise QueryNotSupported(f"{part.replace('_', ' ').upper()} in {where} is not supported")


def _check_predicate(node: exp.Expression, scope: _Scope) -> None:
    """A WHERE condition is boolean logic over predicates, and each predicate compares exactly one
    column with constants. Nothing else is accepted: in particular no bare column used as a boolean,
    whose per-row conversion could fail for some rows only and so turn an error into an answer."""
    if isinstance(node, exp.Paren):
        _check_predicate(node.this, scope)
        return
    if isinstance(node, exp.And | exp.Or):
        _check_predicate(node.this, scope)
        _check_predicate(node.expression, scope)
        return
    if isinstance(node, exp.Not):
        _check_predicate(node.this, scope)
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
        if not isinstance(operand, exp.Column) and not is_constant(operand):
            raise QueryNotSupported(f"{_construct_name(operand)} in WHERE is not supported")
    columns = [operand for operand in operands if isinstance(operand, exp.Column)]
    if len(columns) != 1:
        raise QueryNotSupported(f"each condition must compare one column with constants: {node.sql()}")
    scope.flat(columns[0])


def check_condition(condition: exp.Expression) -> None:
    """The WHERE grammar, for conditions built by another front door (the JSON plan)."""
    _check_predicate(condition, _Scope([TableRef("", "")], None))


def _flat_column(name: str) -> exp.Column:
    return exp.Column(this=exp.to_identifier(name, quoted=False))


def _flatten(node: exp.Expression, scope: _Scope) -> exp.Expression:
    """A copy of a checked condition with every column named by its flat name."""

    def strip(child: exp.Expression) -> exp.Expression:
        if isinstance(child, exp.Column):
            return _flat_column(scope.flat(child))
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


def parse_sql(sql: str, names: Names | None = None) -> QueryPlan:
    """Parse ``sql`` into a plan. Checks the shape only; names are checked against the catalog later
    (``names`` resolves unqualified columns in a join, and tells public reference tables apart)."""
    try:
        return _Planner(sql, names).plan()
    except RecursionError as exc:
        # The nesting limits are meant to keep every query far from this; a shape they do not foresee
        # is still a refused query, not a crash.
        raise InvalidQuery("the query is nested too deeply") from exc


def table_names(sql: str) -> list[str]:
    """The datasets a query reads (FROM and JOIN), for telling public-only queries apart; refuses
    what is not one SELECT."""
    statement = _parse_single_select(_TOP.sub(r"\1", sql, count=1))
    return [str(table.name) for table in statement.find_all(exp.Table)]


class _Planner:
    """One query's parse: tables, row-level expressions, groups, aggregates and post-processing."""

    def __init__(self, sql: str, names: Names | None) -> None:
        self.top: int | None = None
        match = _TOP.match(sql)
        if match is not None:
            self.top = int(match.group(2))
            sql = sql[: match.start()] + match.group(1) + sql[match.end() :]
        self.statement = _parse_single_select(sql)
        self.scope, self.inner_condition = _scope(self.statement, names)
        self.derived: dict[str, Derived] = {}
        self.aggregates: dict[str, Aggregate] = {}
        """By canonical SQL: each aggregate once, however often it is referred to."""
        self.group_by: list[str] = []
        self.lookups: dict[str, str] = {}
        """A public column read per group (flat name) -> the grouping column its table is joined on."""
        self.outputs: list[OutputColumn] = []
        self._hidden = False

    # -- row level --

    def predicate(self, condition: exp.Expression) -> exp.Expression:
        _check_predicate(condition, self.scope)
        return _flatten(condition, self.scope)

    def row(self, node: exp.Expression) -> str:
        """The flat name of a column, or of the derived column computing a row-level expression."""
        while isinstance(node, exp.Paren):
            node = node.this
        if isinstance(node, exp.Column):
            return self.scope.flat(node)
        expression = check_row_expression(node, self.scope.flat, self.predicate)
        key = expression.sql()
        if key not in self.derived:
            self.derived[key] = Derived(name=f"__e{len(self.derived)}", expression=expression, text=node.sql())
        return self.derived[key].name

    # -- aggregates --

    def aggregate(self, node: exp.Expression, name: str | None) -> Aggregate:
        built = self._aggregate(node, name)
        key = built.sql()
        existing = self.aggregates.get(key)
        if existing is not None:
            return existing
        self.aggregates[key] = built
        return built

    def _aggregate(self, node: exp.Expression, name: str | None) -> Aggregate:
        # Unnamed: a readable default for an output of its own, a hidden name for one only referred to.
        hidden = f"__a{len(self.aggregates)}" if self._hidden else None
        if isinstance(node, exp.Count):
            _only(node, {"this", "big_int"}, "COUNT")
            argument = node.this
            if isinstance(argument, exp.Star):
                return Aggregate(function="count", column=None, name=name or hidden or "count")
            if isinstance(argument, exp.Distinct):
                if len(argument.expressions) != 1 or not isinstance(argument.expressions[0], exp.Column):
                    raise QueryNotSupported("COUNT(DISTINCT ...) takes the privacy unit: COUNT(DISTINCT person_id)")
                column = self.scope.flat(argument.expressions[0])
                return Aggregate(function="units", column=column, name=name or hidden or "persons")
            column = self.row(argument)
            return Aggregate(function="count", column=column, name=name or _default(hidden, "count", column))
        simple = _SIMPLE_AGGREGATES.get(type(node))
        if isinstance(node, exp.Anonymous):
            simple = _ALIASES.get(str(node.this).upper())
            if simple is None or len(node.expressions) != 1:
                raise QueryNotSupported(f"{_construct_name(node)} is not supported")
            operand: exp.Expression | None = node.expressions[0]
        else:
            operand = node.this if simple is not None else None
        if simple is not None:
            function, ddof = simple
            if not isinstance(node, exp.Anonymous):
                _only(node, {"this"}, node.key.upper())
            column = self._argument(operand, function.upper())
            return Aggregate(
                function=function, column=column, name=name or _default(hidden, function, column), ddof=ddof
            )
        if isinstance(node, exp.Median):
            _only(node, {"this"}, "MEDIAN")
            column = self._argument(node.this, "MEDIAN")
            return Aggregate(
                function="quantile", column=column, name=name or _default(hidden, "median", column), alpha=0.5
            )
        if isinstance(node, exp.Quantile):
            _only(node, {"this", "quantile"}, "QUANTILE")
            column = self._argument(node.this, "QUANTILE")
            alpha = _quantile_alpha(node.args.get("quantile"))
            return Aggregate(
                function="quantile", column=column, name=name or _default(hidden, "quantile", column), alpha=alpha
            )
        if isinstance(node, exp.WithinGroup) and isinstance(node.this, exp.PercentileCont):
            _only(node.this, {"this"}, "PERCENTILE_CONT")
            order = node.expression
            if not isinstance(order, exp.Order) or len(order.expressions) != 1:
                raise QueryNotSupported("PERCENTILE_CONT needs WITHIN GROUP (ORDER BY <one column>)")
            ordered = order.expressions[0]
            _only(ordered, {"this", "nulls_first"}, "PERCENTILE_CONT")
            column = self._argument(ordered.this, "PERCENTILE_CONT")
            alpha = _quantile_alpha(node.this.this)
            return Aggregate(
                function="quantile", column=column, name=name or _default(hidden, "quantile", column), alpha=alpha
            )
        if isinstance(node, exp.WithinGroup):
            raise QueryNotSupported(f"{_construct_name(node.this)} WITHIN GROUP is not supported; PERCENTILE_CONT is")
        raise QueryNotSupported(f"{_construct_name(node)} is not supported")

    def _argument(self, argument: exp.Expression | None, function: str) -> str:
        if argument is None or isinstance(argument, exp.Star):
            raise QueryNotSupported(
                f"{function} takes one column or expression, not {'nothing' if argument is None else '*'}"
            )
        inner = next(
            (node for node in argument.walk() if isinstance(node, exp.Expression) and _is_aggregate(node)), None
        )
        if inner is not None:
            raise QueryNotSupported(
                f"{_construct_name(inner)} inside {function} is not supported (aggregates of aggregates)"
            )
        return self.row(argument)

    # -- post-processing --

    def reference(self, node: exp.Expression) -> str | None:
        """What a node of a computed output or HAVING refers to, by the name its value has after release."""
        if _is_aggregate(node):
            self._hidden = True
            try:
                return self.aggregate(node, None).name
            finally:
                self._hidden = False
        if isinstance(node, exp.Column):
            if not node.table and str(node.name) in {output.name for output in self.outputs}:
                return str(node.name)
            flat = self.scope.flat(node)
            if flat in self.group_by or flat in self.lookups:
                return flat
            lookup = self._lookup(flat)
            if lookup is not None:
                self.lookups[flat] = lookup
                return flat
            raise QueryNotSupported(
                f"column {node.sql()} is used without an aggregate; row-level values are not answered, "
                "group by it or aggregate it"
            )
        return None

    def _lookup(self, flat: str) -> str | None:
        """For a column of a public table joined on a grouping column: that grouping column."""
        table = self.scope.table_of(flat)
        if not self.scope.is_public(table) or table.on is None:
            return None
        private = table.on[0]
        return private if private in self.group_by else None

    # -- the query --

    def plan(self) -> QueryPlan:
        statement = self.statement
        items = [
            (str(item.alias) if isinstance(item, exp.Alias) else None, _unwrap(item)) for item in statement.expressions
        ]
        for alias, _ in items:
            if alias is not None and not _ALIAS.fullmatch(alias):
                raise InvalidQuery(f"alias {alias!r} must be a plain name (letters, digits, underscore)")
        self._group_by(items)
        positions: dict[int, OutputColumn] = {}
        # Aggregates asked for by name first, so that computed outputs refer to them by that name.
        for index, (alias, node) in enumerate(items):
            if _is_aggregate(node):
                aggregate = self.aggregate(node, alias)
                if alias is not None and aggregate.name != alias:  # the same aggregate asked for twice
                    positions[index] = OutputColumn(alias, "computed", expression=_flat_column(aggregate.name))
                else:
                    positions[index] = OutputColumn(name=aggregate.name, kind="aggregate")
        for index, (alias, node) in enumerate(items):
            if index in positions:
                continue
            if isinstance(node, exp.Star):
                raise QueryNotSupported("SELECT * is not supported; row-level selects are not answered")
            group = self._group_output(node)
            if group is not None:
                positions[index] = OutputColumn(name=alias or _group_name(node, index), kind="group", source=group)
                continue
            if isinstance(node, exp.Column):
                flat = self.scope.flat(node)
                lookup = self._lookup(flat)
                if lookup is None:
                    raise QueryNotSupported(
                        f"column {str(node.name)!r} is selected without an aggregate; row-level selects are not "
                        "answered, group by it or aggregate it"
                    )
                self.lookups[flat] = lookup
                positions[index] = OutputColumn(name=alias or str(node.name), kind="lookup", source=flat)
                continue
            expression = check_post_expression(node, self.reference)
            positions[index] = OutputColumn(name=alias or f"expr{index + 1}", kind="computed", expression=expression)
        self.outputs = [positions[index] for index in range(len(items))]
        self._check_outputs()
        having = statement.args.get("having")
        condition_after = None
        if having is not None:
            condition_after = check_post_expression(having.this, self.reference, condition=True)
            self._check_having_kinds(condition_after)
        where = statement.args.get("where")
        condition = None
        if where is not None:
            condition = self.predicate(where.this)
        if self.inner_condition is not None:
            condition = (
                self.inner_condition if condition is None else exp.And(this=self.inner_condition, expression=condition)
            )
        limit = _limit(statement)
        if self.top is not None:
            if limit is not None:
                raise InvalidQuery("give TOP or LIMIT, not both")
            limit = self.top
        primary = self.scope.tables[0]
        return QueryPlan(
            dataset=primary.dataset,
            group_by=tuple(self.group_by),
            aggregates=tuple(self.aggregates.values()),
            outputs=tuple(self.outputs),
            where=condition,
            order_by=self._order_by(items),
            limit=limit,
            tables=tuple(self.scope.tables) if not self.scope.single else (),
            derived=tuple(self.derived.values()),
            having=condition_after,
            lookups=tuple(self.lookups.items()),
        )

    def _check_having_kinds(self, condition: exp.Expression) -> None:
        """Group keys are released as text, aggregates as numbers: a comparison of the two would fail
        after the query was charged, so it is refused now."""

        def kind(node: exp.Expression) -> str | None:
            if isinstance(node, exp.Literal):
                return "text" if node.is_string else "number"
            if isinstance(node, exp.Column):
                name = str(node.name)
                if name in self.group_by or any(o.kind == "group" and o.name == name for o in self.outputs):
                    return "text"
                if name in {a.name for a in self.aggregates.values()}:
                    return "number"
            return None

        for comparison in condition.find_all(*_COMPARISONS):
            kinds = {kind(comparison.this), kind(comparison.expression)} - {None}
            if len(kinds) > 1:
                raise InvalidQuery(f"HAVING compares a group key (text) with a number: {comparison.sql()}")

    def _group_by(self, items: list[tuple[str | None, exp.Expression]]) -> None:
        group = self.statement.args.get("group")
        if group is None:
            return
        _only(group, {"expressions"}, "GROUP BY")
        aliases = {alias: node for alias, node in items if alias is not None and not isinstance(node, exp.Column)}
        named = {self.scope.flat(node) for node in group.expressions if isinstance(node, exp.Column)}
        for node in group.expressions:
            if isinstance(node, exp.Literal) and not node.is_string and str(node.this).isdigit():
                position = int(node.this)
                if not 1 <= position <= len(items):
                    raise InvalidQuery(f"GROUP BY {position} names no column of the select list")
                node = items[position - 1][1]
            elif isinstance(node, exp.Column) and not node.table and str(node.name) in aliases:
                if not _has_aggregate(aliases[str(node.name)]):  # a select alias of an expression
                    node = aliases[str(node.name)]
            if _is_aggregate(node) or _has_aggregate(node):
                raise QueryNotSupported("GROUP BY on an aggregate is not supported")
            if isinstance(node, exp.Column):
                flat = self.scope.flat(node)
                if self._lookup_candidate(flat, named):
                    continue  # a public value of a grouping column's row: read per group, not grouped by
            try:
                name = self.row(node)
            except QueryNotSupported as exc:
                raise QueryNotSupported(
                    f"GROUP BY: {exc.message}; group by columns, or by CASE, EXTRACT or LEFT of them"
                ) from exc
            if name in self.group_by:
                raise InvalidQuery(f"column {node.sql()!r} appears twice in GROUP BY")
            self.group_by.append(name)

    def _lookup_candidate(self, flat: str, grouped: set[str]) -> bool:
        """A public column whose table is joined on a column also grouped by: one value per group."""
        table = self.scope.table_of(flat)
        return self.scope.is_public(table) and table.on is not None and flat != table.on[1] and table.on[0] in grouped

    def _group_output(self, node: exp.Expression) -> str | None:
        if isinstance(node, exp.Column):
            flat = self.scope.flat(node)
            return flat if flat in self.group_by else None
        if _is_aggregate(node) or _has_aggregate(node):
            return None
        if is_constant(node):
            return None
        try:
            expression = check_row_expression(node, self.scope.flat, self.predicate)
        except QueryNotSupported:
            return None
        derived = self.derived.get(expression.sql())
        return derived.name if derived is not None and derived.name in self.group_by else None

    def _check_outputs(self) -> None:
        grouped = {output.source for output in self.outputs if output.kind == "group"}
        unselected = [name for name in self.group_by if name not in grouped]
        if unselected:
            text = next((d.text for d in self.derived.values() if d.name == unselected[0]), unselected[0])
            raise QueryNotSupported(f"GROUP BY {text!r} must also be selected, or the rows could not be told apart")
        if not any(output.kind == "aggregate" for output in self.outputs) and not self.aggregates:
            if not self.group_by:
                raise QueryNotSupported(
                    "the query must compute at least one aggregate such as COUNT(*), or group by a column"
                )
        names = [output.name for output in self.outputs]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise InvalidQuery(f"output column names must be unique; repeated: {', '.join(duplicates)}")

    def _order_by(self, items: list[tuple[str | None, exp.Expression]]) -> tuple[tuple[str, bool], ...]:
        order = self.statement.args.get("order")
        if order is None:
            return ()
        _only(order, {"expressions"}, "ORDER BY")
        names = [output.name for output in self.outputs]
        by_sql = {node.sql(): output.name for (_, node), output in zip(items, self.outputs, strict=True)}
        result = []
        for ordered in order.expressions:
            _only(ordered, {"this", "desc", "nulls_first"}, "ORDER BY")
            target = ordered.this
            name = None
            if isinstance(target, exp.Column) and not target.table and str(target.name) in names:
                name = str(target.name)
            elif isinstance(target, exp.Literal) and not target.is_string and str(target.this).isdigit():
                position = int(target.this)
                name = names[position - 1] if 1 <= position <= len(names) else None
            else:
                name = by_sql.get(target.sql())
                if name is None and isinstance(target, exp.Column):
                    flat = self.scope.flat(target)
                    name = next((o.name for o in self.outputs if o.kind == "group" and o.source == flat), None)
            if name is None:
                raise QueryNotSupported("ORDER BY may only name output columns (by name, position or as selected)")
            result.append((name, bool(ordered.args.get("desc"))))
        return tuple(result)


def _unwrap(item: exp.Expression) -> exp.Expression:
    node = item.this if isinstance(item, exp.Alias) else item
    while isinstance(node, exp.Paren):
        node = node.this
    return node


def _default(hidden: str | None, function: str, column: str) -> str:
    if hidden is not None:
        return hidden
    if column.startswith("__e"):
        return f"{function}_expr{column.removeprefix('__e')}"
    return f"{function}_{column.replace('.', '_')}"


def _group_name(node: exp.Expression, index: int) -> str:
    return str(node.name) if isinstance(node, exp.Column) else f"group{index + 1}"


def _has_aggregate(node: exp.Expression) -> bool:
    return any(_is_aggregate(inner) for inner in node.walk() if isinstance(inner, exp.Expression))
