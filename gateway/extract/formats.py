"""Extract output formats, each written a batch at a time so nothing waits for the whole extract."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Sequence
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from audit.review import spreadsheet_safe
from gateway.extract.compile import OutputColumn

Format = Literal["csv", "jsonl", "parquet"]
MEDIA_TYPES: dict[str, str] = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}
_ARROW_TYPES = {
    "string": pa.string(),
    "integer": pa.int64(),
    "float": pa.float64(),
    "date": pa.date32(),
    "boolean": pa.bool_(),
}


def _json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date) else value


class _Sink:
    """What pyarrow writes to: bytes collected until taken, and the position it asks for kept as the
    running total, so a Parquet file can leave in pieces and still carry correct offsets."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._position = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        data, self._parts = b"".join(self._parts), []
        return data


class Writer:
    """Rows in (as the gateway releases them, one list per record), bytes out."""

    def __init__(self, format: Format, columns: Sequence[OutputColumn]) -> None:
        self.format = format
        self.names = [column.name for column in columns]
        self._schema = pa.schema([(column.name, _ARROW_TYPES[column.type]) for column in columns])
        self._sink = _Sink()
        self._parquet: pq.ParquetWriter | None = None

    def header(self) -> bytes:
        if self.format == "csv":
            return self._csv([self.names])
        if self.format == "parquet":
            self._parquet = pq.ParquetWriter(pa.PythonFile(self._sink, mode="w"), self._schema)
            return self._sink.take()
        return b""

    def rows(self, rows: list[list[Any]]) -> bytes:
        if self.format == "csv":
            return self._csv([[spreadsheet_safe(value) for value in row] for row in rows])
        if self.format == "jsonl":
            return "".join(
                json.dumps(dict(zip(self.names, map(_json_value, row), strict=True)), ensure_ascii=False) + "\n"
                for row in rows
            ).encode()
        if self._parquet is None:
            raise RuntimeError("header() opens the Parquet file")
        table = pa.Table.from_pylist([dict(zip(self.names, row, strict=True)) for row in rows], schema=self._schema)
        self._parquet.write_table(table)
        return self._sink.take()

    def footer(self) -> bytes:
        if self._parquet is not None:
            self._parquet.close()
            return self._sink.take()
        return b""

    @staticmethod
    def _csv(rows: list[list[Any]]) -> bytes:
        buffer = io.StringIO()
        csv.writer(buffer).writerows(rows)
        return buffer.getvalue().encode()
