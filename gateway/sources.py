"""Data sources. A source runs one compiled statement and returns the (small) aggregated result."""

from __future__ import annotations

import logging
import threading
from typing import Any

import duckdb

from gateway.exceptions import SourceUnavailable

logger = logging.getLogger("datapoort.sources")


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
            # DuckDB's message can quote the row it failed on, so neither the log nor the caller gets it.
            logger.error("data source failed: %s", type(exc).__name__)
            raise SourceUnavailable("the data source could not answer this query") from exc
        finally:
            cursor.close()

    def close(self) -> None:
        self._connection.close()
