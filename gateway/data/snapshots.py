"""Verified snapshots of file-backed datasets: what aggregate queries read instead of the file itself.

A CSV or Parquet file is operator input that any one person's record can break: an extra field or an
unclosed quote made DuckDB's CSV reader (which sniffs the file) fail for every query, and one string
that is not valid UTF-8 made every read of its Parquet column fail. Such an error depends on one record,
so it is an exact, un-noised answer about it. And a file that holds more rows of a unit than
``max_contributions`` allows made the query take the slow, bounding path (one bit about one person,
read off the timing). So a file is converted once, when it is registered or changes, into a snapshot:

* **Rows are read by rules that depend on that row alone.** CSV: an explicit dialect, no sniffing
  (RFC 4180: a header line, UTF-8, ``"`` quotes doubled inside a field, the catalog's delimiter). A
  quoted field may span lines, for at most ``MAX_RECORD_LINES`` lines; a record that does not parse
  within them, or has another number of fields than the header, is dropped *as its first line only*,
  and reading starts again on the line after it, so an unclosed quote does not swallow the records
  that follow. (What no reader can tell apart: an unclosed quote that a later line's quote happens to
  close into a record of the right width. Such records are counted as spanning lines.) A field that is
  not valid UTF-8 becomes NULL. Parquet: every column is brought to a plain type in Arrow, value by
  value (dictionaries decoded, text that is not valid UTF-8 and timestamps beyond the range of a date
  become NULL); a column of a nested or unknown type refuses the file as a whole, from its schema.
* **Values get the catalog's types** (``TRY_CAST``: a value that does not convert becomes NULL), and a
  row without a privacy unit is dropped (it cannot be bounded), as is a row whose unit is not written
  in its canonical form (``007`` for the integer unit 7: two spellings would merge two units).
* **Contributions are bounded**: a unit with more than ``max_contributions`` rows keeps that many,
  those with the smallest SHA-256 over a secret seed and the row's own values (as JSON). The choice for
  a unit depends only on its own rows and the secret, so adding or removing one person changes no one
  else's rows, and which rows are kept cannot be predicted without the seed. (A window over the
  units, which spills to disk: what must fit in memory grows with the largest unit's rows only.)

Every query then reads a typed, bounded Parquet file with one statement whatever the data, so neither
the status, nor the text, nor (beyond the file's size) the time of an answer depends on a record. What
the conversion found (rows read, rejected, values made NULL, units bounded) goes to the operator and the
audit log, never to a querier.

A snapshot is named by a digest of the file's version (device, inode, size, modification and change
time), the dataset's catalog entry and the seed: a change to any of them is a new snapshot. A query
reads a snapshot only if it was made under the catalog entry the gateway holds now (``current_for``):
nothing verified for one version of the catalog answers for another. The manifest ``<dataset>.json`` points at
the current snapshot; a running gateway notices a new manifest (written by ``datapoort datasets ingest``
in another process) before its next query. The previous snapshot is kept until the next ingestion, so a
query planned on it can still read it.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import fcntl
import hashlib
import io
import json
import logging
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gateway.data.catalog import DatasetSpec
from gateway.data.relations import SQL_TYPES, ident, string_literal
from gateway.exceptions import SourceUnavailable

logger = logging.getLogger("datapoort.snapshots")

FORMAT_VERSION = 1
BATCH_ROWS = 65_536
MAX_RECORD_LINES = 64
"""The most physical lines one CSV record (with quoted line breaks) may span."""
MAX_RECORD_BYTES = 1 << 20
_RANK = "__datapoort_rank"

# Test-only: skip the bounding step, so the privacy audit can show that it catches a missing bound.
# Reachable only from Python (``planted_bug_skip_bounding``), never from a setting or the environment.
_SKIP_BOUNDING_FOR_AUDIT = False


@contextlib.contextmanager
def planted_bug_skip_bounding() -> Iterator[None]:
    """For the privacy audit's own test only: snapshots made inside are NOT bounded (a planted bug the
    audit must detect). Never use this anywhere else."""
    global _SKIP_BOUNDING_FOR_AUDIT
    _SKIP_BOUNDING_FOR_AUDIT = True
    try:
        yield
    finally:
        _SKIP_BOUNDING_FOR_AUDIT = False


class IngestionFailed(SourceUnavailable):
    """The file could not be converted at all (missing, unreadable, not Parquet, lacking a column):
    a property of the file as a whole, not of one record."""


@dataclass(frozen=True, slots=True)
class IngestionReport:
    """What the conversion found; for the operator and the audit log only."""

    dataset: str
    source: str
    rows_read: int
    rows_rejected: int
    """CSV lines that did not start a record that parses with as many fields as the header."""
    records_spanning_lines: int
    values_nulled: dict[str, int]
    """Per column: values that were not valid UTF-8 or did not convert to the catalog's type."""
    rows_without_unit: int
    """Rows without a unit, or with one not in its canonical form."""
    units_bounded: int
    """Units that had more than ``max_contributions`` rows."""
    rows_bounded_away: int
    rows: int
    """Rows in the snapshot."""
    seconds: float
    snapshot: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    dataset: str
    key: str
    entry: str
    """The digest of the catalog entry (and seed) it was made under."""
    path: Path
    size: int
    rows: int


def _fingerprint(path: str) -> list[int] | None:
    """A file's version. The change time cannot be set by a user (writing, ``touch -d`` and ``utime``
    all move it to now), and a replacement by rename has a new inode."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return [status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns]


def _write_private(path: Path, content: bytes) -> None:
    """Atomically, mode 0600 from the start: snapshots and manifests describe personal data."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@dataclass(slots=True)
class _Staging:
    """Rows decoded by per-row rules, all of the catalog's columns, before typing."""

    path: Path
    rows_read: int = 0
    rows_rejected: int = 0
    spanning: int = 0
    invalid_text: dict[str, int] = field(default_factory=dict)


def _parse(text: str, delimiter: str) -> tuple[str, list[str]]:
    """("ok", fields) for exactly one record, ("open", []) for a quoted field still open at the end,
    ("bad", []) otherwise."""
    try:
        records = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))
    except csv.Error as exc:
        return ("open", []) if "unexpected end of data" in str(exc) else ("bad", [])
    return ("ok", records[0]) if len(records) == 1 else ("bad", [])


def _records(lines: Iterator[bytes], delimiter: str, width: int, staging: _Staging) -> Iterator[list[str]]:
    """The fields of every record, by the rules in the module docstring."""
    pending: collections.deque[bytes] = collections.deque()

    def next_line() -> bytes | None:
        return pending.popleft() if pending else next(lines, None)

    while (first := next_line()) is not None:
        line = first.rstrip(b"\r\n")
        if not line:
            continue
        staging.rows_read += 1
        text = line.decode("utf-8", errors="surrogateescape")
        status, fields = _parse(text, delimiter)
        consumed = [first]
        while status == "open" and len(consumed) < MAX_RECORD_LINES and len(text) < MAX_RECORD_BYTES:
            following = next_line()
            if following is None:
                break
            consumed.append(following)
            text += "\n" + following.rstrip(b"\r\n").decode("utf-8", errors="surrogateescape")
            status, fields = _parse(text, delimiter)
        if status == "ok" and len(fields) == width:
            staging.spanning += len(consumed) > 1
            yield fields
            continue
        staging.rows_rejected += 1
        pending.extendleft(reversed(consumed[1:]))  # read again, each as a line of its own


def _stage_csv(dataset: DatasetSpec, source: str, target: Path) -> _Staging:
    staging = _Staging(target)
    names = list(dataset.columns)
    delimiter = dataset.source.delimiter
    schema = pa.schema([(name, pa.string()) for name in names])
    try:
        handle = open(source, "rb")
    except OSError as exc:
        raise IngestionFailed(f"cannot read {source}: {exc.strerror}") from exc
    with handle, pq.ParquetWriter(target, schema) as writer:
        header_line = handle.readline()
        try:
            header_text = header_line.decode("utf-8-sig").rstrip("\r\n")  # a BOM, as spreadsheets write it
            header = next(csv.reader([header_text], delimiter=delimiter, strict=True))
        except (UnicodeDecodeError, csv.Error, StopIteration) as exc:
            raise IngestionFailed(f"{source}: the header line is not a {delimiter!r}-separated UTF-8 line") from exc
        header = [name.strip() for name in header]
        missing = [name for name in names if name not in header]
        if missing:
            raise IngestionFailed(f"{source}: the header lacks the catalog's columns {missing}")
        positions = [header.index(name) for name in names]
        columns: list[list[str | None]] = [[] for _ in names]

        def flush() -> None:
            writer.write_batch(
                pa.record_batch([pa.array(values, type=pa.string()) for values in columns], schema=schema)
            )
            for values in columns:
                values.clear()

        for fields in _records(iter(handle), delimiter, len(header), staging):
            for index, position in enumerate(positions):
                value: str | None = fields[position]
                if value == "":
                    value = None
                elif value is not None and not value.isascii():
                    try:
                        value.encode("utf-8")
                    except UnicodeEncodeError:  # a lone surrogate: bytes that were not UTF-8
                        staging.invalid_text[names[index]] = staging.invalid_text.get(names[index], 0) + 1
                        value = None
                columns[index].append(value)
            if len(columns[0]) >= BATCH_ROWS:
                flush()
        flush()
    return staging


def _valid_text(array: pa.Array) -> tuple[pa.Array, int]:
    """The array with every value that is not valid UTF-8 replaced by NULL, and how many there were.
    Arrow checks a whole array at C speed; only an array that fails is looked at value by value."""
    try:
        array.validate(full=True)
        return array, 0
    except pa.ArrowInvalid:
        pass
    cleaned: list[str | None] = []
    invalid = 0
    for value in array.view(pa.large_binary() if pa.types.is_large_string(array.type) else pa.binary()).to_pylist():
        if value is None:
            cleaned.append(None)
            continue
        try:
            cleaned.append(value.decode("utf-8"))
        except UnicodeDecodeError:
            cleaned.append(None)
            invalid += 1
    return pa.array(cleaned, type=array.type), invalid


_DAY = {"s": 86_400, "ms": 86_400_000, "us": 86_400_000_000, "ns": 86_400_000_000_000}


def _plain(data_type: pa.DataType) -> bool:
    """Whether a Parquet column's Arrow type can be staged (decoded, checked or converted per value)."""
    if pa.types.is_dictionary(data_type):
        return _plain(data_type.value_type)
    return not (
        pa.types.is_nested(data_type)
        or pa.types.is_null(data_type)
        or pa.types.is_interval(data_type)
        or pa.types.is_union(data_type)
        or isinstance(data_type, pa.ExtensionType)
    )


def _as_dates(array: pa.Array, unit: str) -> pa.Array:
    """Timestamps (or date64) as dates in UTC, value by value: beyond the range of a date, NULL."""
    values = array.cast(pa.int64()).to_numpy(zero_copy_only=False)
    valid = ~np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    days = np.floor_divide(np.where(valid, values, 0), _DAY[unit])
    valid &= np.abs(days) < 2**31 - 1
    return pa.array(np.where(valid, days, 0).astype(np.int32), type=pa.int32(), mask=~valid).cast(pa.date32())


def _staged(array: pa.Array) -> tuple[pa.Array, int]:
    """A column as the staging file holds it (a type DuckDB reads without error whatever the values),
    and how many of its values were not valid UTF-8."""
    data_type = array.type
    if pa.types.is_dictionary(data_type):
        array = array.dictionary_decode()
        data_type = array.type
    if pa.types.is_string_view(data_type):
        array = array.cast(pa.large_string())
    elif pa.types.is_binary_view(data_type):
        array = array.cast(pa.large_binary())
    data_type = array.type
    if pa.types.is_binary(data_type) or pa.types.is_fixed_size_binary(data_type):
        array = array.cast(pa.binary()).view(pa.string())
    elif pa.types.is_large_binary(data_type):
        array = array.view(pa.large_string())
    data_type = array.type
    if pa.types.is_string(data_type) or pa.types.is_large_string(data_type):
        return _valid_text(array)
    if pa.types.is_timestamp(data_type):
        return _as_dates(array, data_type.unit), 0
    if pa.types.is_date64(data_type):
        return _as_dates(array, "ms"), 0
    if pa.types.is_float16(data_type):
        return array.cast(pa.float32()), 0
    if pa.types.is_decimal(data_type):
        return array.cast(pa.string()), 0  # any precision as text; TRY_CAST takes it from there
    if pa.types.is_time(data_type) or pa.types.is_duration(data_type):
        return array.cast(pa.int64()), 0
    return array, 0  # booleans, integers, floats, date32


def _stage_parquet(dataset: DatasetSpec, source: str, target: Path) -> _Staging:
    staging = _Staging(target)
    names = list(dataset.columns)
    try:
        reader = pq.ParquetFile(source)
    except (OSError, pa.ArrowException) as exc:
        raise IngestionFailed(f"{source} is not a readable Parquet file") from exc
    schema = reader.schema_arrow
    missing = [name for name in names if name not in schema.names]
    if missing:
        raise IngestionFailed(f"{source}: the file lacks the catalog's columns {missing}")
    unusable = [name for name in names if not _plain(schema.field(name).type)]
    if unusable:
        raise IngestionFailed(f"{source}: columns {unusable} are of a nested or unknown type")
    writer: pq.ParquetWriter | None = None
    try:
        for batch in reader.iter_batches(batch_size=BATCH_ROWS, columns=names):
            arrays = []
            for name, array in zip(batch.schema.names, batch.columns, strict=True):
                array, invalid = _staged(array)
                if invalid:
                    staging.invalid_text[name] = staging.invalid_text.get(name, 0) + invalid
                arrays.append(array)
            staging.rows_read += batch.num_rows
            cleaned = pa.record_batch(arrays, names=batch.schema.names)
            if writer is None:
                writer = pq.ParquetWriter(target, cleaned.schema)
            writer.write_batch(cleaned)
    except (OSError, pa.ArrowException) as exc:
        raise IngestionFailed(f"{source} could not be read to the end (truncated or damaged?)") from exc
    finally:
        if writer is not None:
            writer.close()
    if writer is None:  # an empty file: a staging file with the right columns and no rows
        pq.write_table(pa.table({name: pa.array([], type=pa.string()) for name in names}), target)
    return staging


def entry_digest(dataset: DatasetSpec, seed: bytes) -> str:
    """What a snapshot was made under, besides the file: the catalog entry, the seed, and whether the
    privacy audit's planted bug was on (a snapshot made so is never taken for a real one)."""
    document = {
        "format": FORMAT_VERSION,
        "dataset": dataset.model_dump(mode="json"),
        "seed": hashlib.sha256(b"datapoort snapshot seed\x00" + seed).hexdigest(),
        "planted_bug": _SKIP_BOUNDING_FOR_AUDIT,
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def snapshot_key(dataset: DatasetSpec, seed: bytes, fingerprint: list[int]) -> str:
    """The name of one snapshot: the file's version and everything ``entry_digest`` covers."""
    document = {"entry": entry_digest(dataset, seed), "source": fingerprint}
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def _refuse_lost_precision(connection: duckdb.DuckDBPyConnection, dataset: DatasetSpec, staged: str) -> None:
    """A value an integer column would round (``17000.5`` declared ``integer``) refuses the ingestion:
    the operator declared the wrong type, and rounding it without a word would release other figures than
    the data holds. The refusal counts the values and names no value or row."""
    integers = [name for name, spec in dataset.columns.items() if spec.type == "integer"]
    if not integers:
        return
    counts = ", ".join(
        f"count(*) FILTER (WHERE TRY_CAST({ident(name, 'duckdb')} AS DOUBLE) IS NOT NULL AND "
        f"TRY_CAST({ident(name, 'duckdb')} AS DOUBLE) <> TRY_CAST({ident(name, 'duckdb')} AS BIGINT))"
        for name in integers
    )
    found = connection.execute(f"SELECT {counts} FROM {staged}").fetchone() or ()
    lossy = {name: int(count) for name, count in zip(integers, found, strict=True) if count}
    if lossy:
        described = ", ".join(f"{name} ({count} values)" for name, count in sorted(lossy.items()))
        raise IngestionFailed(
            f"values with decimals in integer columns would be rounded: {described}; declare them float "
            "(with decimals) or correct the source"
        )


class SnapshotStore:
    """The snapshots of one data dir: making them, and knowing the current one of each dataset."""

    def __init__(
        self, directory: Path, seed: bytes, *, memory_limit: str = "256MB", temp_directory: str | None = None
    ) -> None:
        if len(seed) < 32:
            raise ValueError("the snapshot seed must hold at least 32 bytes")
        self.directory = directory
        self._seed = seed
        self._memory_limit = memory_limit
        self._temp_directory = temp_directory
        self._lock = threading.Lock()
        self._current: dict[str, tuple[list[int] | None, Snapshot | None]] = {}

    def _manifest(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    def current(self, name: str) -> Snapshot | None:
        """The dataset's current snapshot, if it is there as its manifest describes it (re-read when the
        manifest changed). Checks only file metadata: the same cost whatever the data."""
        manifest = self._manifest(name)
        version = _fingerprint(str(manifest))
        with self._lock:
            cached = self._current.get(name)
        if cached is not None and cached[0] == version:
            snapshot = cached[1]
        else:
            snapshot = self._read_manifest(name, manifest) if version is not None else None
            with self._lock:
                self._current[name] = (version, snapshot)
        if snapshot is None:
            return None
        try:
            if snapshot.path.stat().st_size != snapshot.size:
                return None
        except OSError:
            return None
        return snapshot

    def _read_manifest(self, name: str, manifest: Path) -> Snapshot | None:
        try:
            document = json.loads(manifest.read_text(encoding="utf-8"))
            return Snapshot(
                dataset=name,
                key=str(document["key"]),
                entry=str(document["entry"]),
                path=self.directory / str(document["file"]),
                size=int(document["size"]),
                rows=int(document["rows"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            logger.error("the snapshot manifest of %s is unreadable", name)
            return None

    def current_for(self, name: str, dataset: DatasetSpec) -> Snapshot | None:
        """The current snapshot, if it was made under this catalog entry (and seed) and can be read: what
        a query may read. A file that changed since keeps being answered from it until it is ingested."""
        snapshot = self.current(name)
        if snapshot is None or snapshot.entry != entry_digest(dataset, self._seed):
            return None
        return snapshot if os.access(snapshot.path, os.R_OK) else None

    def is_current(self, name: str, dataset: DatasetSpec) -> bool:
        """Whether the current snapshot is of the file as it is now, under this catalog entry."""
        snapshot = self.current(name)
        fingerprint = _fingerprint(dataset.source.path or "")
        return (
            snapshot is not None
            and fingerprint is not None
            and snapshot.key == snapshot_key(dataset, self._seed, fingerprint)
        )

    def _prepare_directory(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)  # staging files inside hold the file's rows as they were read

    def ensure(self, name: str, dataset: DatasetSpec) -> IngestionReport | None:
        """Ingest the file unless its current snapshot is of this version; the report, or ``None``."""
        self._prepare_directory()
        with self._exclusive(name):
            if self.is_current(name, dataset):
                return None
            return self._ingest(name, dataset)

    def ingest(self, name: str, dataset: DatasetSpec) -> IngestionReport:
        """Ingest the file now, whether or not it changed."""
        self._prepare_directory()
        with self._exclusive(name):
            return self._ingest(name, dataset)

    @contextlib.contextmanager
    def _exclusive(self, name: str) -> Iterator[None]:
        """One ingestion of a dataset at a time across the processes sharing the data dir."""
        descriptor = os.open(self.directory / f".{name}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)

    def _ingest(self, name: str, dataset: DatasetSpec) -> IngestionReport:
        source = dataset.source.path
        if dataset.source.kind not in ("csv", "parquet") or source is None:
            raise ValueError(f"dataset {name!r} is not file-backed")
        started = time.monotonic()
        before = _fingerprint(source)
        if before is None:
            raise IngestionFailed(f"dataset {name!r}: the file {source} is missing")
        key = snapshot_key(dataset, self._seed, before)
        for stale in self.directory.glob(f".staging-{name}-*.parquet"):  # left by a crash (we hold the lock)
            stale.unlink(missing_ok=True)
        staging_path = self.directory / f".staging-{name}-{secrets.token_hex(8)}.parquet"
        target = self.directory / f"{name}-{key[:16]}.parquet"
        try:
            stage = _stage_csv if dataset.source.kind == "csv" else _stage_parquet
            staging = stage(dataset, source, staging_path)
            if _fingerprint(source) != before:
                raise IngestionFailed(f"dataset {name!r}: {source} changed while it was read; ingest again")
            counts = self._convert(dataset, staging.path, target)
        finally:
            staging_path.unlink(missing_ok=True)
        size = target.stat().st_size
        report = IngestionReport(
            dataset=name,
            source=source,
            rows_read=staging.rows_read,
            rows_rejected=staging.rows_rejected,
            records_spanning_lines=staging.spanning,
            values_nulled={
                column: staging.invalid_text.get(column, 0) + counts["nulled"].get(column, 0)
                for column in dataset.columns
                if staging.invalid_text.get(column, 0) + counts["nulled"].get(column, 0)
            },
            rows_without_unit=counts["without_unit"],
            units_bounded=counts["units_bounded"],
            rows_bounded_away=counts["bounded_away"],
            rows=counts["rows"],
            seconds=round(time.monotonic() - started, 3),
            snapshot=target.name,
        )
        manifest = {
            "key": key,
            "entry": entry_digest(dataset, self._seed),
            "file": target.name,
            "size": size,
            "rows": report.rows,
            "report": asdict(report),
        }
        previous = self.current(name)
        _write_private(self._manifest(name), json.dumps(manifest, indent=2).encode())
        self._remove_old(name, keep={target.name, previous.path.name if previous is not None else ""})
        logger.info("ingested %s: %s", name, json.dumps(asdict(report)))
        return report

    def _remove_old(self, name: str, keep: set[str]) -> None:
        for path in self.directory.glob(f"{name}-*.parquet"):
            if path.name not in keep:
                path.unlink(missing_ok=True)
        for path in self.directory.glob(f".{name}-*.tmp"):  # left by an ingestion that failed
            path.unlink(missing_ok=True)

    def _convert(self, dataset: DatasetSpec, staging: Path, target: Path) -> dict[str, Any]:
        """Type, drop rows without a (canonical) unit, bound, write (0600) and count, in a DuckDB of its own."""
        names = list(dataset.columns)
        staged_types = pq.read_schema(staging)
        unit_name = dataset.unit
        unit = ident(unit_name, "duckdb")

        def typed_column(name: str) -> str:
            column, sql_type = ident(name, "duckdb"), SQL_TYPES[dataset.columns[name].type]
            converted = f"TRY_CAST({column} AS {sql_type})"
            staged_as_text = pa.types.is_string(staged_types.field(name).type) or pa.types.is_large_string(
                staged_types.field(name).type
            )
            if name == unit_name and sql_type != "VARCHAR" and staged_as_text:
                # One spelling per unit: '007' and '7' would otherwise become one unit of two people.
                converted = f"CASE WHEN CAST({converted} AS VARCHAR) = {column} THEN {converted} END"
            return f"{converted} AS {column}"

        typed = ", ".join(typed_column(name) for name in names)
        staged = f"read_parquet({string_literal(str(staging), 'duckdb')})"
        row = ", ".join(f"{ident(name, 'duckdb')} := {ident(name, 'duckdb')}" for name in names)
        seed = string_literal(self._seed.hex(), "duckdb")
        m = dataset.max_contributions
        select_columns = ", ".join(ident(name, "duckdb") for name in names)
        if _SKIP_BOUNDING_FOR_AUDIT:
            kept = f"SELECT {select_columns} FROM typed WHERE {unit} IS NOT NULL"
        else:
            # Per unit, the m rows with the smallest keyed hash of the row's own values (as JSON, so no
            # two different rows share an encoding; identical rows tie, and either is the same row). A
            # window over the units spills to disk beyond the memory limit (an aggregate keeping m rows
            # per unit did not, and ran out of memory at 1M units).
            kept = (
                f"SELECT {select_columns} FROM (SELECT *, row_number() OVER (PARTITION BY {unit} "
                f"ORDER BY sha256({seed} || to_json(struct_pack({row})))) AS {_RANK} "
                f"FROM typed WHERE {unit} IS NOT NULL) WHERE {_RANK} <= {m}"
            )
        connection = duckdb.connect(":memory:")
        temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            connection.execute("SET memory_limit = ?", [self._memory_limit])
            connection.execute("SET preserve_insertion_order = false")  # order is the keyed hash's anyway
            if self._temp_directory is not None:
                Path(self._temp_directory).mkdir(mode=0o700, parents=True, exist_ok=True)
                os.chmod(self._temp_directory, 0o700)  # spilled pages hold raw rows
                connection.execute("SET temp_directory = ?", [self._temp_directory])
            connection.execute(f"CREATE TEMP VIEW typed AS SELECT {typed} FROM {staged}")
            nulled_sql = ", ".join(
                f"count(*) FILTER (WHERE {ident(name, 'duckdb')} IS NOT NULL AND TRY_CAST({ident(name, 'duckdb')} "
                f"AS {SQL_TYPES[spec.type]}) IS NULL)"
                for name, spec in dataset.columns.items()
            )
            nulled = connection.execute(f"SELECT {nulled_sql} FROM {staged}").fetchone() or ()
            _refuse_lost_precision(connection, dataset, staged)
            without_unit = connection.execute(f"SELECT count(*) FROM typed WHERE {unit} IS NULL").fetchone()
            bounded = connection.execute(
                f"SELECT count(*) FILTER (WHERE n > {m}), coalesce(sum(n - {m}) FILTER (WHERE n > {m}), 0) "
                f"FROM (SELECT count(*) AS n FROM typed WHERE {unit} IS NOT NULL GROUP BY {unit})"
            ).fetchone()
            # Created here, mode 0600, before DuckDB writes into it: never readable by others, not even
            # for a moment (and no process-wide umask changed under other threads).
            os.close(os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            connection.execute(f"COPY ({kept}) TO {string_literal(str(temporary), 'duckdb')} (FORMAT parquet)")
            rows = connection.execute(
                f"SELECT count(*) FROM read_parquet({string_literal(str(temporary), 'duckdb')})"
            ).fetchone()
        except duckdb.Error as exc:
            temporary.unlink(missing_ok=True)
            raise IngestionFailed(f"the snapshot could not be written: {type(exc).__name__}") from exc
        finally:
            connection.close()
        os.chmod(temporary, 0o600)
        os.replace(temporary, target)
        return {
            "nulled": {name: int(count) for name, count in zip(names, nulled, strict=True) if count},
            "without_unit": int(without_unit[0]) if without_unit else 0,
            "units_bounded": int(bounded[0]) if bounded else 0,
            "bounded_away": 0 if _SKIP_BOUNDING_FOR_AUDIT or not bounded else int(bounded[1]),
            "rows": int(rows[0]) if rows else 0,
        }
