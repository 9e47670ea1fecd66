"""Public reference tables (catalog ``kind: public``): read whole, typed by the catalog, kept in memory.

They are small (CBS kerncijfers per wijk and buurt: hundreds of rows) and hold nothing personal, so
they are read once per version of the file (its size and modification time) and put into statements
as inline ``VALUES``: a private dataset in DuckDB or in PostgreSQL joins them the same way, and nothing
has to move between sources. Their size is checked, and refused, against ``MAX_PUBLIC_ROWS``: a limit
on public data, which may depend on it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from gateway.data.catalog import DatasetSpec
from gateway.data.relations import SQL_TYPES, ident, source_relation, string_literal, typed_projection
from gateway.exceptions import CatalogError

MAX_PUBLIC_ROWS = 10_000


@dataclass(frozen=True, slots=True)
class PublicTable:
    name: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    def values(self, column: str) -> list[Any]:
        position = self.columns.index(column)
        return [row[position] for row in self.rows]

    def unique(self, column: str) -> bool:
        values = [value for value in self.values(column) if value is not None]
        return len(set(values)) == len(values)

    def lookup(self, key: str, column: str) -> dict[str, Any]:
        """Each key's value of ``column`` (keys as text, as group keys are)."""
        keys, values = self.values(key), self.values(column)
        return {_text(k): v for k, v in zip(keys, values, strict=True) if k is not None}

    def values_sql(self, spec: DatasetSpec, dialect: str) -> str:
        """The table as an inline relation, each value cast to the catalog's type."""
        types = [exp.DataType.build(SQL_TYPES[spec.columns[name].type]).sql(dialect) for name in self.columns]
        names = ", ".join(ident(name, dialect) for name in self.columns)
        if not self.rows:
            nulls = ", ".join(
                f"CAST(NULL AS {kind}) AS {ident(n, dialect)}" for n, kind in zip(self.columns, types, strict=True)
            )
            return f"(SELECT {nulls} WHERE FALSE)"
        rows = ", ".join(
            "("
            + ", ".join(f"CAST({_sql_value(value, dialect)} AS {kind})" for value, kind in zip(row, types, strict=True))
            + ")"
            for row in self.rows
        )
        return f"(SELECT * FROM (VALUES {rows}) AS __public({names}))"  # noqa: S608 - quoted constants


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _sql_value(value: Any, dialect: str) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    return string_literal(str(value), dialect)


class PublicTables:
    """The public tables of a catalog, read through ``fetch`` (a DuckDB or PostgreSQL statement)."""

    def __init__(self, fetch: Callable[[DatasetSpec, str], Sequence[tuple[Any, ...]]]) -> None:
        self._fetch = fetch
        self._cache: dict[str, tuple[object, DatasetSpec, PublicTable]] = {}
        """Per table: the file's version and the catalog entry it was read under (a changed entry is read again)."""
        self._lock = threading.Lock()

    def get(self, name: str, spec: DatasetSpec) -> PublicTable:
        version = _version(spec)
        with self._lock:
            cached = self._cache.get(name)
        if cached is not None and cached[0] == version and version is not None and cached[1] == spec:
            return cached[2]
        columns = tuple(spec.columns)
        dialect = "postgres" if spec.source.kind == "postgresql" else "duckdb"
        projection = typed_projection(spec, set(columns), dialect)
        sql = f"SELECT {projection} FROM {source_relation(spec, dialect)} LIMIT {MAX_PUBLIC_ROWS + 1}"  # noqa: S608
        rows = self._fetch(spec, sql)
        if len(rows) > MAX_PUBLIC_ROWS:
            raise CatalogError(
                f"public table {name!r} has more than {MAX_PUBLIC_ROWS} rows; a reference table is small"
            )
        ordered = sorted(columns)  # typed_projection lists columns by name
        positions = [ordered.index(column) for column in columns]
        table = PublicTable(name, columns, tuple(tuple(row[p] for p in positions) for row in rows))
        with self._lock:
            self._cache[name] = (version, spec, table)
        return table


def _version(spec: DatasetSpec) -> object:
    """A file's size and modification time; None for a database table (read each time)."""
    if spec.source.path is None:
        return None
    try:
        status = os.stat(spec.source.path)
    except OSError:
        return None
    return (status.st_size, status.st_mtime_ns)
