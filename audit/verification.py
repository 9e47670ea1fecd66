"""Recomputing the hash chain, fast enough for a log of millions of events.

Rendering an event's canonical form field by field in Python costs more than fetching it, so the
database renders it: SQLite's ``json_object`` (keys given in sorted order, compact, the same string
escaping as ``json.dumps(ensure_ascii=False)``) and, on PostgreSQL, ``to_json`` per field joined with the
canonical punctuation. Python only adds the one float (``privacy_cost``: both databases format floats
differently from Python), hashes and compares.

The reference form stays ``audit.chain.canonical_bytes``: a row whose database rendering does not
reproduce its stored hash is recomputed from its fields with the reference before it is reported, so a
rendering difference (an unusual float or escape) costs time, never a false alarm. The converse is
sound: a rendering equal to the bytes that were hashed is valid JSON of the same values, so the
fields are unchanged.

Long chains are split into consecutive ranges verified by separate processes, each reading its range
plus the event before it. On PostgreSQL they share the caller's exported snapshot. On SQLite each reads a
snapshot of its own; appends past the head read first do not matter, and a break they report (which a
prune in the meantime could cause) is confirmed in the caller's snapshot before it is believed.
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Text,
    and_,
    case,
    cast,
    create_engine,
    func,
    literal,
    or_,
    select,
    text,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from audit import retention
from audit.chain import FIELDS_BY_VERSION, GENESIS_HASH, HASHED_FIELDS, event_hash
from audit.models import AuditEvent

PARALLEL_FROM_EVENTS = 200_000
"""Below this many events one process is faster than starting others."""

_SPLIT_AT = "privacy_cost"
_SNAPSHOT_ID = re.compile(r"[0-9A-Fa-f]+-[0-9A-Fa-f]+(-[0-9]+)?")


@dataclass(frozen=True, slots=True)
class ChainVerification:
    ok: bool
    events_checked: int
    head_sequence: int | None
    head_hash: str | None
    first_broken_sequence: int | None = None
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class _Range:
    """Sequences ``first``..``last``. ``start`` is the chain's first sequence: the range that begins there
    links to ``start_hash`` (the genesis or the retention anchor), any other to the stored event before it."""

    first: int
    last: int
    start: int
    start_hash: str


@dataclass(frozen=True, slots=True)
class _RangeResult:
    checked: int
    last: tuple[int, str] | None
    broken: int | None = None
    problem: str | None = None


# -- the canonical form, rendered by the database ---------------------------------------------------

_COST_MARK = f'"{_SPLIT_AT}":0,'
"""Where the database renders ``privacy_cost``: ``0``, replaced in Python by the float's own form. It is the
first place this text occurs, since a quote inside a JSON string value is always escaped."""


def _keys(version: int) -> list[str]:
    return sorted([*FIELDS_BY_VERSION[version], "v"])


_TIMESTAMPS = ("occurred_at", "completed_at")


def _sqlite_value(name: str) -> ColumnElement[Any]:
    if name == _SPLIT_AT:
        return literal(0)
    if name in _TIMESTAMPS:  # stored as 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC; NULL stays NULL
        return func.replace(cast(getattr(AuditEvent, name), Text), " ", "T") + "Z"
    column: ColumnElement[Any] = getattr(AuditEvent, "canonical_version" if name == "v" else name)
    return column


def _sqlite_rendering(version: int) -> ColumnElement[str]:
    arguments: list[Any] = []
    for name in _keys(version):
        arguments += [literal(name, Text), _sqlite_value(name)]
    return func.json_object(*arguments, type_=Text)


def _postgresql_value(name: str) -> ColumnElement[str]:
    if name == _SPLIT_AT:
        return literal("0", Text)
    if name in ("v", "sequence"):
        return cast(AuditEvent.canonical_version if name == "v" else AuditEvent.sequence, Text)
    if name == "rows_released":
        return func.coalesce(cast(AuditEvent.rows_released, Text), "null")
    if name in _TIMESTAMPS:
        moment = func.to_char(func.timezone("UTC", getattr(AuditEvent, name)), 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
        return func.coalesce(cast(func.to_json(moment), Text), "null")
    return func.coalesce(cast(func.to_json(getattr(AuditEvent, name)), Text), "null")


def _postgresql_rendering(version: int) -> ColumnElement[str]:
    rendered: ColumnElement[str] = literal("{", Text)
    for index, name in enumerate(_keys(version)):
        rendered = rendered + literal(("," if index else "") + f'"{name}":', Text) + _postgresql_value(name)
    return rendered + "}"


def _rendering(dialect: str) -> ColumnElement[str]:
    """The canonical form of every version, with ``_COST_MARK`` in place of the cost. An unknown version
    renders as the newest, fails to match and goes to the reference, which refuses it."""
    render = _sqlite_rendering if dialect == "sqlite" else _postgresql_rendering
    *older, newest = sorted(FIELDS_BY_VERSION)
    return case(
        *[(AuditEvent.canonical_version == version, render(version)) for version in older], else_=render(newest)
    )


def _version_or_flag() -> ColumnElement[int]:
    """The event's canonical version, 0 for an event that carries fields its version does not hash (a
    downgrade that would let those be forged), or -1 for a version this verifier does not know."""
    flags: list[tuple[ColumnElement[bool], int]] = [(AuditEvent.canonical_version.not_in(list(FIELDS_BY_VERSION)), -1)]
    for version in sorted(FIELDS_BY_VERSION)[:-1]:
        unhashed = [name for name in HASHED_FIELDS if name not in FIELDS_BY_VERSION[version]]
        carried = or_(*[getattr(AuditEvent, name).is_not(None) for name in unhashed])
        flags.append((and_(AuditEvent.canonical_version == version, carried), 0))
    return case(*flags, else_=AuditEvent.canonical_version)


# -- one range --------------------------------------------------------------------------------------


class _CostForms(dict[object, str]):
    """``privacy_cost`` as the canonical form writes it, remembered per value: a log holds few distinct
    costs. A value the form cannot hold (infinite, not a float) renders as nothing, so that event goes to
    the reference, which refuses it."""

    def __missing__(self, cost: object) -> str:
        number = "null" if cost is None else float.__repr__(cost) if type(cost) is float and math.isfinite(cost) else ""
        form = f'"{_SPLIT_AT}":{number},'
        if cost != 0:  # 0.0 and -0.0 are one key but two forms: never remembered, so never confused
            self[cost] = form
        return form


def _reference_matches(connection: Connection, sequence: int) -> bool:
    columns = [getattr(AuditEvent, name) for name in (*HASHED_FIELDS, "canonical_version", "hash")]
    row = dict(connection.execute(select(*columns).where(AuditEvent.sequence == sequence)).mappings().one())
    try:
        return bool(event_hash(row) == row["hash"])
    except (ValueError, TypeError):  # a value the canonical form cannot hold, or an unknown version
        return False


def _verify_range(connection: Connection, span: _Range, *, batch_size: int = 10_000) -> _RangeResult:
    expected_prev, newest_version = span.start_hash, 1
    if span.first > span.start:
        before = connection.execute(
            select(AuditEvent.hash, AuditEvent.canonical_version).where(AuditEvent.sequence == span.first - 1)
        ).first()
        if before is None:  # reported by the range before this one, which holds that sequence
            return _RangeResult(0, None, span.first - 1, f"sequence {span.first - 1} is missing")
        expected_prev, newest_version = before[0], before[1]
    statement = (
        select(
            AuditEvent.sequence,
            AuditEvent.prev_hash,
            AuditEvent.hash,
            _version_or_flag(),
            AuditEvent.privacy_cost,
            _rendering(connection.dialect.name),
        )
        .where(AuditEvent.sequence.between(span.first, span.last))
        .order_by(AuditEvent.sequence)
        .execution_options(yield_per=batch_size)
    )
    try:
        return _walk(connection, connection.execute(statement), span, expected_prev, newest_version)
    except SQLAlchemyError:
        # SQLite keeps whatever bytes were written, so a column can hold a value it cannot render (a blob,
        # text that is not UTF-8): such an event is found the slow way. PostgreSQL stores only valid
        # text, so an error there (a lost connection) is not about the log and must not be reported as a
        # break.
        if connection.dialect.name != "sqlite":
            raise
        return _verify_range_by_reference(connection, span)


def _walk(connection: Connection, result: Any, span: _Range, expected_prev: str, newest_version: int) -> _RangeResult:
    """The fast path over one range's rendered rows."""
    expected_sequence = span.first
    sha256, costs = hashlib.sha256, _CostForms()
    checked, last = 0, None
    try:
        for sequence, prev_hash, stored_hash, version, cost, rendered in result:
            problem = None
            if sequence != expected_sequence:
                problem = f"sequence {expected_sequence} is missing (next present: {sequence})"
                sequence = expected_sequence
            elif prev_hash != expected_prev:
                problem = "prev_hash does not match the previous event's hash"
            elif version is None or version == -1:
                problem = "an event in a canonical version this verifier does not know"
            elif version < newest_version:
                # An older version hashes fewer fields: it may neither follow a newer one nor carry
                # fields its hash does not cover (flagged 0).
                problem = "an event in an older canonical form where it cannot be"
            elif sha256(
                rendered.replace(_COST_MARK, costs[cost], 1).encode()
            ).hexdigest() != stored_hash and not _reference_matches(connection, sequence):
                problem = "the stored hash does not match the event's fields"
            if problem is not None:
                return _RangeResult(checked, last, sequence, problem)
            checked += 1
            newest_version = version
            expected_prev = stored_hash
            expected_sequence += 1
            last = (sequence, stored_hash)
    finally:
        result.close()
    if expected_sequence <= span.last:
        return _RangeResult(checked, last, expected_sequence, f"sequence {expected_sequence} is missing")
    return _RangeResult(checked, last)


def _verify_range_by_reference(connection: Connection, span: _Range) -> _RangeResult:
    """The slow path, for a range the database could not render: each event read alone and recomputed
    in Python; an event that cannot even be read is where the range breaks."""
    expected_prev = span.start_hash
    if span.first > span.start:
        expected_prev = (
            connection.execute(
                select(AuditEvent.hash).where(AuditEvent.sequence == span.first - 1)
            ).scalar_one_or_none()
            or ""
        )
    checked, last = 0, None
    for sequence in range(span.first, span.last + 1):
        try:
            row = connection.execute(
                select(AuditEvent.prev_hash, AuditEvent.hash).where(AuditEvent.sequence == sequence)
            ).first()
            intact = row is not None and row[0] == expected_prev and _reference_matches(connection, sequence)
        except SQLAlchemyError:
            intact = False
        if not intact or row is None:
            return _RangeResult(checked, last, sequence, "the event cannot be read or does not match its hash")
        checked, last, expected_prev = checked + 1, (sequence, row[1]), row[1]
    return _RangeResult(checked, last)


def _verify_range_apart(url: str, snapshot: str | None, span: _Range) -> _RangeResult:
    """A worker process: its own connection, in the caller's snapshot where the database can share one."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            if snapshot is not None:
                if not _SNAPSHOT_ID.fullmatch(snapshot):  # pragma: no cover - PostgreSQL's own format
                    raise ValueError("not a snapshot id")
                connection.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
                connection.execute(text(f"SET TRANSACTION SNAPSHOT '{snapshot}'"))
            return _verify_range(connection, span)
    finally:
        engine.dispose()


# -- the whole chain --------------------------------------------------------------------------------


def _split(first: int, last: int, parts: int) -> list[tuple[int, int]]:
    size = -(-(last - first + 1) // parts)
    return [(low, min(low + size - 1, last)) for low in range(first, last + 1, size)]


def _combine(results: Sequence[_RangeResult]) -> ChainVerification:
    checked, last = 0, None
    for part in results:
        checked += part.checked
        last = part.last or last
        if part.broken is not None:
            return ChainVerification(
                False, checked, last[0] if last else None, last[1] if last else None, part.broken, part.problem
            )
    return ChainVerification(True, checked, last[0] if last else None, last[1] if last else None)


def _process_context() -> multiprocessing.context.BaseContext:
    """Forked workers start at once with everything imported (a spawned one spends about a second on
    imports); forking is only safe while this process runs no other thread, as in the CLI."""
    if "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _can_run_apart(connection: Connection) -> bool:
    database = connection.engine.url.database
    return connection.dialect.name == "postgresql" or (
        connection.dialect.name == "sqlite" and database not in (None, "", ":memory:")
    )


def verify_chain(session: Session, *, workers: int = 1, parallel_from: int = PARALLEL_FROM_EVENTS) -> ChainVerification:
    """Walk the whole chain and recompute every hash, in ``workers`` processes for long chains.

    Detects an edited field, an inserted, removed or reordered event anywhere before the head.
    Removing events from the end of the log is only detectable against a signed checkpoint. The caller
    should hold a read snapshot (``gateway.db.read_snapshot``) so that concurrent appends do not count.
    """
    # After retention pruning the chain starts at the latest anchor (its signature is checked by
    # ``verify_log``, which has the public keys).
    anchor = retention.latest_anchor(session)
    start_hash = anchor.hash if anchor is not None else GENESIS_HASH
    start = anchor.sequence + 1 if anchor is not None else 1
    connection = session.connection()
    lowest, highest = connection.execute(select(func.min(AuditEvent.sequence), func.max(AuditEvent.sequence))).one()
    if lowest is None:
        return ChainVerification(True, 0, None, None)
    if lowest < start:
        return ChainVerification(False, 0, None, None, start, f"an event (sequence {lowest}) before the chain's start")
    whole = _Range(start, highest, start, start_hash)
    if workers <= 1 or highest - start + 1 < parallel_from or not _can_run_apart(connection):
        return _combine([_verify_range(connection, whole)])
    snapshot = (
        connection.execute(text("SELECT pg_export_snapshot()")).scalar_one()
        if connection.dialect.name == "postgresql"
        else None
    )
    url = connection.engine.url.render_as_string(hide_password=False)
    spans = [_Range(low, high, start, start_hash) for low, high in _split(start, highest, workers)]
    with ProcessPoolExecutor(len(spans), mp_context=_process_context()) as pool:
        found = _combine(list(pool.map(_verify_range_apart, [url] * len(spans), [snapshot] * len(spans), spans)))
    if found.ok or snapshot is not None:
        return found
    # SQLite workers read snapshots of their own: a prune since ours would look like missing events. A
    # break is rare and must be right, so it is confirmed in our own snapshot.
    return _combine([_verify_range(connection, whole)])
