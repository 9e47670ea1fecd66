"""Data sources. A source runs one compiled statement and returns the (small) aggregated result."""

from __future__ import annotations

import threading
from typing import Any

import duckdb

from gateway.exceptions import SourceUnavailable


class DuckDBSource:
    """Parquet and CSV files read through an in-process DuckDB.

    One in-memory database per gateway process; each query runs on its own cursor, which DuckDB allows
    from several threads at once.
    """

    def __init__(self, *, threads: int | None = None) -> None:
        self._connection = duckdb.connect(":memory:")
        if threads is not None:
            self._connection.execute(f"SET threads = {int(threads)}")
        self._lock = threading.Lock()

    def fetch_all(self, sql: str) -> list[tuple[Any, ...]]:
        with self._lock:
            cursor = self._connection.cursor()
        try:
            return cursor.execute(sql).fetchall()
        except duckdb.Error as exc:
            raise SourceUnavailable(f"the data source could not answer: {type(exc).__name__}") from exc
        finally:
            cursor.close()

    def close(self) -> None:
        self._connection.close()
