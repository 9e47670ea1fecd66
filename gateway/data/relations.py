"""How a dataset is read in its source's SQL dialect: the relation that holds it, its columns with the
catalog's types, and quoting. Shared by the aggregate and the extract compilers."""

from __future__ import annotations

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


def contributions_sql(dataset: DatasetSpec) -> str:
    """The most rows any one privacy unit has in a file source, and how many rows have no unit."""
    unit = ident(dataset.privacy_unit, "duckdb")
    unit_type = SQL_TYPES[dataset.columns[dataset.privacy_unit].type]
    return (
        "SELECT coalesce(max(n) FILTER (WHERE u IS NOT NULL), 0), coalesce(sum(n) FILTER (WHERE u IS NULL), 0) "
        f"FROM (SELECT u, count(*) AS n FROM (SELECT TRY_CAST({unit} AS {unit_type}) AS u "
        f"FROM {source_relation(dataset, 'duckdb')}) GROUP BY u)"
    )
