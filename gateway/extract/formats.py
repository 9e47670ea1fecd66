"""Extract output formats, each written a batch at a time so nothing waits for the whole extract."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from audit.review import FORMULA_START
from gateway.extract.compile import OutputColumn

if TYPE_CHECKING:
    import pyarrow.parquet as pq

Format = Literal["csv", "jsonl", "parquet"]
MEDIA_TYPES: dict[str, str] = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}
_FORMULA = "^[" + "".join(re.escape(start) for start in FORMULA_START) + "]"
"""What ``audit.review.spreadsheet_safe`` guards against, as a pattern over a whole column."""
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
    """Arrow tables in (the released records, in output order and types), bytes out."""

    def __init__(self, format: Format, columns: Sequence[OutputColumn]) -> None:
        self.format = format
        self.names = [column.name for column in columns]
        self.schema = pa.schema([(column.name, _ARROW_TYPES[column.type]) for column in columns])
        # Text a spreadsheet could run as a formula; pseudonyms (base32) never start with one of these.
        self._checked = [
            index for index, column in enumerate(columns) if column.type == "string" and not column.is_unit
        ]
        self._sink = _Sink()
        self._parquet: pq.ParquetWriter | None = None

    def header(self) -> bytes:
        if self.format == "csv":
            buffer = io.StringIO()
            csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\n").writerow(self.names)  # as Arrow quotes text
            return buffer.getvalue().encode()
        if self.format == "parquet":
            import pyarrow.parquet as pq  # only here: about 9 MB the gateway need not carry otherwise

            self._parquet = pq.ParquetWriter(pa.PythonFile(self._sink, mode="w"), self.schema)
            return self._sink.take()
        return b""

    def rows(self, table: pa.Table) -> bytes:
        table = table.cast(self.schema)
        if self.format == "csv":
            for index in self._checked:
                column = table.column(index)
                risky = pc.match_substring_regex(column, _FORMULA)
                if pc.any(risky).as_py():
                    safe = pc.if_else(risky, pc.binary_join_element_wise("'", column, ""), column)
                    table = table.set_column(index, self.names[index], safe)
            buffer = io.BytesIO()
            pacsv.write_csv(table, buffer, write_options=pacsv.WriteOptions(include_header=False))
            return buffer.getvalue()
        if self.format == "jsonl":
            return "".join(
                json.dumps({name: _json_value(value) for name, value in row.items()}, ensure_ascii=False) + "\n"
                for row in table.to_pylist()
            ).encode()
        if self._parquet is None:
            raise RuntimeError("header() opens the Parquet file")
        self._parquet.write_table(table)
        return self._sink.take()

    def footer(self) -> bytes:
        if self._parquet is not None:
            self._parquet.close()
            return self._sink.take()
        return b""
