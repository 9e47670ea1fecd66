"""Public reference tables read alone: answered exactly, without noise, free of budget.

A query whose every table is public (catalog ``kind: public``) holds nothing personal, so it is
answered as asked: row-level selects, filters, ordering, and plain aggregates. It is still parsed
against a whitelist (so no file or function of the engine can be reached through it), authorised per
table for the purpose, and audited. It runs in a DuckDB cursor of its own over the tables' rows as
Arrow tables; a mistake in it (an unknown column) is a 400 that may quote it, as the data is public.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from gateway.data.catalog import Catalog
from gateway.exceptions import InvalidQuery, QueryNotSupported
from gateway.query.expressions import construct_name
from gateway.query.sql_frontend import table_names

_ALLOWED: tuple[type[exp.Expression], ...] = (
    exp.Select,
    exp.From,
    exp.Join,
    exp.Table,
    exp.TableAlias,
    exp.Identifier,
    exp.Column,
    exp.Star,
    exp.Alias,
    exp.Literal,
    exp.Null,
    exp.Boolean,
    exp.Neg,
    exp.Paren,
    exp.And,
    exp.Or,
    exp.Not,
    exp.EQ,
    exp.NEQ,
    exp.LT,
    exp.LTE,
    exp.GT,
    exp.GTE,
    exp.In,
    exp.Between,
    exp.Is,
    exp.Add,
    exp.Sub,
    exp.Mul,
    exp.Div,
    exp.Where,
    exp.Group,
    exp.Having,
    exp.Order,
    exp.Ordered,
    exp.Limit,
    exp.Count,
    exp.Sum,
    exp.Avg,
    exp.Min,
    exp.Max,
    exp.Round,
    exp.Distinct,
)


@dataclass(frozen=True, slots=True)
class PublicQuery:
    datasets: tuple[str, ...]
    sql: str
    """In DuckDB's dialect, each table named ``__public_<name>``."""
    text: str
    """The query as parsed, for the audit log."""


def public_only(sql: str, catalog: Catalog) -> bool:
    """Does the query read public tables only? (A query that does not parse is left to the front door.)"""
    try:
        names = table_names(sql)
    except (InvalidQuery, QueryNotSupported):
        return False
    specs = [catalog.dataset(name) for name in names]
    return bool(specs) and all(spec is not None and spec.public for spec in specs)


def plan_public(sql: str, catalog: Catalog) -> PublicQuery:
    try:
        statement = sqlglot.parse_one(sql)
    except ParseError as exc:  # pragma: no cover - public_only has parsed it already
        raise InvalidQuery(f"the SQL could not be parsed: {exc}") from exc
    for node in statement.walk():
        if not isinstance(node, exp.Expression):
            continue
        if isinstance(node, exp.In) and node.args.get("query") is not None:
            raise QueryNotSupported("subquery in WHERE is not supported")
        if not isinstance(node, _ALLOWED):
            raise QueryNotSupported(f"{construct_name(node)} is not supported on a public table")
        if isinstance(node, exp.Table) and (node.args.get("db") or node.args.get("catalog")):
            raise QueryNotSupported("FROM must name a dataset without a schema")
    datasets = []
    rendered = statement.copy()
    for table in rendered.find_all(exp.Table):
        name = str(table.name)
        spec = catalog.dataset(name)
        if spec is None or not spec.public:  # pragma: no cover - public_only checked every table
            raise QueryNotSupported(f"{name!r} is not a public table")
        datasets.append(name)
        alias = table.alias or name
        table.set("this", exp.to_identifier(f"__public_{name}", quoted=True))
        table.set("alias", exp.TableAlias(this=exp.to_identifier(alias, quoted=True)))
    return PublicQuery(tuple(dict.fromkeys(datasets)), rendered.sql("duckdb"), statement.sql())
