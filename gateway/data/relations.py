"""How a dataset is read in its source's SQL dialect: the relation that holds it, its columns with the
catalog's types, and quoting. Shared by the aggregate and the extract compilers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from gateway.data.catalog import DatasetSpec

SQL_TYPES = {"string": "VARCHAR", "integer": "BIGINT", "float": "DOUBLE", "date": "DATE", "boolean": "BOOLEAN"}


def source_dialect(dataset: DatasetSpec) -> str:
    """The SQL dialect of the dataset's source: PostgreSQL for tables, DuckDB for files."""
    return "postgres" if dataset.source.kind == "postgresql" else "duckdb"


def ident(name: str, dialect: str) -> str:
    return exp.to_identifier(name, quoted=True).sql(dialect)


def string_literal(value: str, dialect: str) -> str:
    return exp.Literal.string(value).sql(dialect)


def source_relation(dataset: DatasetSpec, dialect: str) -> str:
    source = dataset.source
    if source.kind == "postgresql":
        return ".".join(ident(part, dialect) for part in (source.table or "").split("."))
    if source.kind == "csv":
        # Every column as text: a type guessed from a sample would make the reader fail on a later row
        # that does not fit, an error that depends on one row. TRY_CAST gives each column its type.
        return f"read_csv({string_literal(source.path or '', dialect)}, all_varchar = true)"
    return f"read_parquet({string_literal(source.path or '', dialect)})"


def typed_projection(dataset: DatasetSpec, names: set[str], dialect: str) -> str:
    if dialect == "duckdb":
        # Files carry no types of their own that we trust: a value that does not convert becomes NULL.
        return ", ".join(
            f"TRY_CAST({ident(name, dialect)} AS {SQL_TYPES[dataset.columns[name].type]}) AS {ident(name, dialect)}"
            for name in sorted(names)
        )
    # A database table's types are checked against the catalog when the source is opened.
    return ", ".join(ident(name, dialect) for name in sorted(names))


def quoted_condition(condition: exp.Expression, dialect: str) -> str:
    def quote(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Column):
            return exp.column(exp.to_identifier(node.name, quoted=True))
        return node

    return condition.copy().transform(quote).sql(dialect)


@dataclass(frozen=True, slots=True)
class Relation:
    """What an aggregate statement reads, and what is already true of it."""

    sql: str
    """The relation as it appears after ``FROM``."""
    dialect: str
    typed: bool
    """Its columns already have the catalog's types."""
    bounded: bool
    """Every row has a unit, and no unit more than ``max_contributions`` rows: the statement need not
    bound contributions itself."""
    postgres_env: str | None = None
    """For a statement that runs in PostgreSQL: the environment variable holding the database's URL."""
    inputs: tuple[tuple[str, Callable[[], Any]], ...] = ()
    """For a DuckDB statement that joins PostgreSQL tables: (name, a function opening an Arrow record
    batch reader of the table's rows), registered under that name while the statement runs."""


def raw_relation(dataset: DatasetSpec) -> Relation:
    """The dataset's source as it is: a PostgreSQL table (typed by the database, checked against the
    catalog) or, for tests and tools, a file read directly."""
    dialect = source_dialect(dataset)
    postgres = dataset.source.kind == "postgresql"
    return Relation(
        source_relation(dataset, dialect),
        dialect,
        typed=postgres,
        bounded=False,
        postgres_env=dataset.source.url_env if postgres else None,
    )


def snapshot_relation(path: str) -> Relation:
    """A verified snapshot (``gateway.data.snapshots``): typed and bounded at ingestion."""
    return Relation(f"read_parquet({string_literal(path, 'duckdb')})", "duckdb", typed=True, bounded=True)
