"""Data sources. A source runs the statement it is handed and returns the (small) aggregated result.

Aggregates over files read their verified snapshot (``gateway.data.snapshots``), never the file itself;
extracts read the file (record-level, no differential privacy to protect).

Files (Parquet, CSV) are read by an in-process DuckDB; PostgreSQL tables through SQLAlchemy, with the
connection URL taken from the environment variable the catalog names. Errors never carry the source's
message outward: it can quote the row it failed on.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any

import duckdb
import pyarrow as pa
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy import types as sqltypes
from sqlalchemy.exc import SQLAlchemyError

from gateway.data.catalog import DatasetSpec
from gateway.data.public_tables import MAX_PUBLIC_ROWS, PublicTable, PublicTables
from gateway.data.relations import Relation, ident, raw_relation, snapshot_relation, source_relation
from gateway.data.snapshots import SnapshotStore
from gateway.exceptions import CatalogError, InvalidQuery, SourceUnavailable, StatementTimeout

logger = logging.getLogger("datapoort.sources")

# Which SQLAlchemy column types a catalog type accepts in a PostgreSQL table.
_COMPATIBLE: dict[str, tuple[type[sqltypes.TypeEngine[Any]], ...]] = {
    "string": (sqltypes.String,),
    "integer": (sqltypes.Integer,),
    "float": (sqltypes.Float, sqltypes.Numeric, sqltypes.Integer),
    "date": (sqltypes.Date,),
    "boolean": (sqltypes.Boolean,),
}
DEFAULT_STATEMENT_SECONDS = 30.0
_ARROW_TYPES = {
    "string": pa.string(),
    "integer": pa.int64(),
    "float": pa.float64(),
    "date": pa.date32(),
    "boolean": pa.bool_(),
}


DEFAULT_DUCKDB_MEMORY_LIMIT = "256MB"
DEFAULT_EXTRACT_MEMORY_LIMIT = "32MB"


def _arrow_table(spec: DatasetSpec, table: PublicTable) -> pa.Table:
    schema = pa.schema([(column, _ARROW_TYPES[spec.columns[column].type]) for column in table.columns])
    columns = list(zip(*table.rows, strict=True)) if table.rows else [() for _ in table.columns]
    return pa.Table.from_arrays(
        [_arrow_array(values, field.type) for values, field in zip(columns, schema, strict=True)], schema=schema
    )


def _arrow_array(values: Sequence[Any], kind: pa.DataType) -> pa.Array:
    if kind == pa.float64():  # PostgreSQL's numeric arrives as Decimal
        return pa.array([None if value is None else float(value) for value in values], type=kind)
    return pa.array(list(values), type=kind)


class DuckDBSource:
    """One in-memory DuckDB per gateway process; each query runs on its own cursor.

    Operators whose state grows with the number of privacy units (bounding contributions, checking a
    file's contributions) spill to ``temp_directory`` beyond ``memory_limit``, so the gateway's memory
    does not grow with the data."""

    def __init__(
        self,
        *,
        memory_limit: str = DEFAULT_DUCKDB_MEMORY_LIMIT,
        temp_directory: str | None = None,
        preserve_order: bool = True,
        threads: int | None = None,
        statement_seconds: float = DEFAULT_STATEMENT_SECONDS,
    ) -> None:
        self._statement_seconds = statement_seconds
        self._connection = duckdb.connect(":memory:")
        self._connection.execute("SET memory_limit = ?", [memory_limit])
        if threads is not None:  # each thread holds buffers of its own: fewer threads, less memory
            self._connection.execute(f"SET threads = {int(threads)}")
        if not preserve_order:  # rows may come in any order: less to hold while streaming
            self._connection.execute("SET preserve_insertion_order = false")
        if temp_directory is not None:
            self._connection.execute("SET temp_directory = ?", [temp_directory])
        self._lock = threading.Lock()

    def fetch_all(
        self, sql: str, inputs: tuple[tuple[str, Callable[[], pa.RecordBatchReader]], ...] = ()
    ) -> list[tuple[Any, ...]]:
        """The statement's rows, or ``StatementTimeout`` once it ran ``statement_seconds``: a deadline
        set before the data is read, the same whatever the data (the query stays charged).

        ``inputs`` are streams (a PostgreSQL table's rows) the statement reads under their names: DuckDB
        consumes them batch by batch, spilling what it must hold beyond ``memory_limit``."""
        with self._lock:
            cursor = self._connection.cursor()
        deadline = threading.Timer(self._statement_seconds, cursor.interrupt)
        deadline.daemon = True
        deadline.start()
        try:
            for name, reader in inputs:
                cursor.register(name, reader())
            return cursor.execute(sql).fetchall()
        except duckdb.InterruptException as exc:
            raise StatementTimeout(f"the query ran longer than {self._statement_seconds:g} s and was stopped") from exc
        except duckdb.Error as exc:
            logger.error("data source failed: %s", type(exc).__name__)
            raise SourceUnavailable("the data source could not answer this query") from exc
        finally:
            deadline.cancel()
            cursor.close()

    def fetch_named(
        self, sql: str, tables: tuple[tuple[str, pa.Table], ...], limit: int
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Column names and at most ``limit`` rows of a statement over in-memory tables registered under
        their names, within the same deadline; DuckDB's own errors are the caller's to map."""
        with self._lock:
            cursor = self._connection.cursor()
        deadline = threading.Timer(self._statement_seconds, cursor.interrupt)
        deadline.daemon = True
        deadline.start()
        try:
            for name, table in tables:
                cursor.register(name, table)
            result = cursor.execute(sql)
            return [column[0] for column in result.description or []], result.fetchmany(limit)
        except duckdb.InterruptException as exc:
            raise StatementTimeout(f"the query ran longer than {self._statement_seconds:g} s and was stopped") from exc
        finally:
            deadline.cancel()
            cursor.close()

    def stream(self, sql: str, batch_size: int) -> Generator[list[tuple[Any, ...]], None, None]:
        """Batches of rows as DuckDB produces them; closing the generator (a client that went away)
        closes the cursor, which stops the query."""
        with self._lock:
            cursor = self._connection.cursor()
        try:
            cursor.execute(sql)
            while batch := cursor.fetchmany(batch_size):
                yield batch
        except duckdb.Error as exc:
            logger.error("data source failed: %s", type(exc).__name__)
            raise SourceUnavailable("the data source could not answer this query") from exc
        finally:
            cursor.close()

    def stream_arrow(self, sql: str, batch_size: int) -> Generator[pa.RecordBatch, None, None]:
        """The same, as Arrow record batches: no Python object per value on the way out."""
        with self._lock:
            cursor = self._connection.cursor()
        try:
            yield from cursor.sql(sql).to_arrow_reader(batch_size)
        except duckdb.Error as exc:
            logger.error("data source failed: %s", type(exc).__name__)
            raise SourceUnavailable("the data source could not answer this query") from exc
        finally:
            cursor.close()

    def close(self) -> None:
        self._connection.close()


class PostgresSource:
    """A PostgreSQL database holding dataset tables; statements run read-only, with a time limit."""

    def __init__(self, url: str, *, statement_seconds: float = DEFAULT_STATEMENT_SECONDS) -> None:
        self._statement_ms = int(statement_seconds * 1000)
        self._engine: Engine = create_engine(url, pool_pre_ping=True)
        self._checked: dict[str, DatasetSpec] = {}
        """Per dataset, the catalog entry its table was checked against (a changed entry is checked again)."""
        self._lock = threading.Lock()

    def check_columns(self, name: str, dataset: DatasetSpec) -> None:
        """Refuse a table whose columns do not have the catalog's types (once per dataset and entry)."""
        if self._checked.get(name) == dataset:
            return
        table = dataset.source.table or ""
        schema, _, table_name = table.rpartition(".")
        try:
            actual = {
                column["name"]: column["type"]
                for column in inspect(self._engine).get_columns(table_name, schema or None)
            }
        except SQLAlchemyError as exc:
            logger.error("data source failed: %s", type(exc).__name__)
            raise SourceUnavailable("the data source could not answer this query") from exc
        for column_name, spec in dataset.columns.items():
            column_type = actual.get(column_name)
            if column_type is None or not isinstance(column_type, _COMPATIBLE[spec.type]):
                raise CatalogError(
                    f"dataset {name!r}: column {column_name!r} of table {table} is "
                    f"{'missing' if column_type is None else column_type!s}, but the catalog says {spec.type}"
                )
        with self._lock:
            self._checked[name] = dataset

    def probe(self, dataset: DatasetSpec) -> None:
        """A database that does not answer, or a table or column gone since it was checked, is refused
        before anything is spent: the catalog's columns, no rows."""
        columns = ", ".join(ident(name, "postgres") for name in dataset.columns)
        table = source_relation(dataset, "postgres")
        try:
            with self._engine.connect() as connection:
                connection.exec_driver_sql(f"SELECT {columns} FROM {table} LIMIT 0")  # noqa: S608 - quoted identifiers
        except SQLAlchemyError as exc:
            logger.error("data source failed: %s", type(exc).__name__)
            raise SourceUnavailable("the data source could not answer this query") from exc

    def fetch_all(self, sql: str) -> list[tuple[Any, ...]]:
        try:
            with self._engine.connect() as connection:
                connection.execute(text("SET TRANSACTION READ ONLY"))
                connection.execute(text(f"SET LOCAL statement_timeout = {self._statement_ms}"))
                # Sent as is: through text() a ':name' inside a string constant would become a parameter,
                # and with an empty parameter set the driver would read '%' as a placeholder.
                result = connection.exec_driver_sql(sql, execution_options={"no_parameters": True})
                return [tuple(row) for row in result]
        except SQLAlchemyError as exc:
            logger.error("data source failed: %s", type(exc).__name__)
            raise SourceUnavailable("the data source could not answer this query") from exc

    def stream(self, sql: str, batch_size: int) -> Generator[list[tuple[Any, ...]], None, None]:
        """Batches from a server-side cursor, so the table never sits in the gateway's memory."""
        try:
            with self._engine.connect() as connection:
                connection.execute(text("SET TRANSACTION READ ONLY"))
                connection.execute(text(f"SET LOCAL statement_timeout = {self._statement_ms}"))
                result = connection.exec_driver_sql(
                    sql,
                    execution_options={"no_parameters": True, "stream_results": True, "max_row_buffer": batch_size},
                )
                while batch := result.fetchmany(batch_size):
                    yield [tuple(row) for row in batch]
        except SQLAlchemyError as exc:
            logger.error("data source failed: %s", type(exc).__name__)
            raise SourceUnavailable("the data source could not answer this query") from exc

    def close(self) -> None:
        self._engine.dispose()


class Sources:
    """Routes a dataset's compiled statement to the source that holds it."""

    def __init__(
        self,
        *,
        duckdb_memory_limit: str = DEFAULT_DUCKDB_MEMORY_LIMIT,
        duckdb_temp_directory: str | None = None,
        extract_memory_limit: str = DEFAULT_EXTRACT_MEMORY_LIMIT,
        extract_threads: int = 1,
        snapshots: SnapshotStore | None = None,
        statement_seconds: float = DEFAULT_STATEMENT_SECONDS,
    ) -> None:
        self._statement_seconds = statement_seconds
        self.duckdb = DuckDBSource(
            memory_limit=duckdb_memory_limit, temp_directory=duckdb_temp_directory, statement_seconds=statement_seconds
        )
        # Extracts put each batch in pseudonym order anyway, so the source's order need not be kept.
        self.extract_duckdb = DuckDBSource(
            memory_limit=extract_memory_limit,
            temp_directory=duckdb_temp_directory,
            preserve_order=False,
            threads=extract_threads,
        )
        self._postgres: dict[str, PostgresSource] = {}
        self._lock = threading.Lock()
        self.snapshots = snapshots
        self.public = PublicTables(self._fetch_public)

    def _fetch_public(self, dataset: DatasetSpec, sql: str) -> list[tuple[Any, ...]]:
        if dataset.source.kind == "postgresql":
            return self._postgres_for(dataset).fetch_all(sql)
        return self.duckdb.fetch_all(sql)

    def run_relation(self, relation: Relation, sql: str) -> list[tuple[Any, ...]]:
        """Run a statement compiled for a joined relation, where its dialect says."""
        if relation.dialect == "postgres":
            return self._postgres_at(relation.postgres_env or "").fetch_all(sql)
        return self.duckdb.fetch_all(sql, relation.inputs)

    def run_public(
        self, sql: str, tables: Mapping[str, tuple[DatasetSpec, PublicTable]]
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """A statement over public tables only (``gateway.query.public_query``), each registered as
        ``__public_<name>``: its column names and at most ``MAX_PUBLIC_ROWS`` rows. Its errors may be
        quoted: the data is public."""
        inputs = tuple((f"__public_{name}", _arrow_table(spec, table)) for name, (spec, table) in tables.items())
        try:
            return self.duckdb.fetch_named(sql, inputs, MAX_PUBLIC_ROWS)
        except duckdb.Error as exc:
            raise InvalidQuery(f"the query on public tables failed: {str(exc).splitlines()[0]}") from exc

    def arrow_reader(self, dataset: DatasetSpec, sql: str, batch_size: int = 50_000) -> pa.RecordBatchReader:
        """A PostgreSQL table's rows (the typed columns ``sql`` selects, in the catalog's order) as a
        stream of Arrow batches from a server-side cursor: what a join with a file moves into DuckDB,
        ``batch_size`` rows at a time."""
        names = sorted(dataset.columns)
        schema = pa.schema([(name, _ARROW_TYPES[dataset.columns[name].type]) for name in names])
        source = self._postgres_for(dataset)

        def batches() -> Generator[pa.RecordBatch, None, None]:
            for rows in source.stream(sql, batch_size):
                columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
                yield pa.RecordBatch.from_arrays(
                    [_arrow_array(column, field.type) for column, field in zip(columns, schema, strict=True)],
                    schema=schema,
                )

        return pa.RecordBatchReader.from_batches(schema, batches())

    def relation_for(self, name: str, dataset: DatasetSpec) -> Relation:
        """What an aggregate on the dataset reads, checked now, before any budget is reserved, for what
        does not depend on the data: a file's verified snapshot must be there (ingested, the size its
        manifest says), a database must answer and its table have the catalog's column types."""
        if dataset.source.kind == "postgresql":
            source = self._postgres_for(dataset)
            source.check_columns(name, dataset)
            source.probe(dataset)
            return raw_relation(dataset)
        snapshot = self.snapshots.current_for(name, dataset) if self.snapshots is not None else None
        if snapshot is None:
            raise SourceUnavailable(
                f"dataset {name!r} has no verified snapshot for its catalog entry; the operator must ingest it"
            )
        return snapshot_relation(str(snapshot.path))

    def check_ready(self, name: str, dataset: DatasetSpec) -> None:
        """For extracts, which read the source itself: a database source without its URL, or a table
        whose column types disagree with the catalog, fails now."""
        if dataset.source.kind == "postgresql":
            self._postgres_for(dataset).check_columns(name, dataset)

    def run(self, name: str, dataset: DatasetSpec, sql: str) -> list[tuple[Any, ...]]:
        """Run an aggregate statement compiled for ``relation_for``'s relation."""
        if dataset.source.kind == "postgresql":
            source = self._postgres_for(dataset)
            source.check_columns(name, dataset)
            return source.fetch_all(sql)
        return self.duckdb.fetch_all(sql)

    def stream(
        self, name: str, dataset: DatasetSpec, sql: str, *, batch_size: int = 10_000
    ) -> Generator[list[tuple[Any, ...]], None, None]:
        """Rows of a record-level statement (constants inlined by the compiler), in batches."""
        if dataset.source.kind == "postgresql":
            source = self._postgres_for(dataset)
            source.check_columns(name, dataset)
            return source.stream(sql, batch_size)
        return self.extract_duckdb.stream(sql, batch_size)

    def stream_arrow(
        self, name: str, dataset: DatasetSpec, sql: str, *, batch_size: int = 10_000
    ) -> Generator[pa.RecordBatch, None, None]:
        """Rows of a record-level statement as Arrow record batches (columns ``__unit``, ``__c0``, ...)."""
        if dataset.source.kind != "postgresql":
            yield from self.extract_duckdb.stream_arrow(sql, batch_size)
            return
        for rows in self.stream(name, dataset, sql, batch_size=batch_size):
            columns = list(zip(*rows, strict=True))
            yield pa.RecordBatch.from_arrays(
                [pa.array(column) for column in columns],
                names=["__unit"] + [f"__c{index}" for index in range(len(columns) - 1)],
            )

    def _postgres_for(self, dataset: DatasetSpec) -> PostgresSource:
        return self._postgres_at(dataset.source.url_env or "")

    def _postgres_at(self, variable: str) -> PostgresSource:
        url = os.environ.get(variable)
        if not url:
            raise CatalogError(f"the environment variable {variable} with the source's URL is not set")
        with self._lock:
            if url not in self._postgres:
                self._postgres[url] = PostgresSource(url, statement_seconds=self._statement_seconds)
            return self._postgres[url]

    def close(self) -> None:
        self.duckdb.close()
        self.extract_duckdb.close()
        for source in self._postgres.values():
            source.close()
