"""What the privacy officer asks of the log: selections of events, page by page or as a stream, and
summaries of refusals. Read-only; the caller audits the reading itself."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from audit.chain import HASHED_FIELDS, format_timestamp
from audit.models import AuditEvent

SelectT = TypeVar("SelectT", bound=Select[*tuple[Any, ...]])
EXPORTED_FIELDS: tuple[str, ...] = (*HASHED_FIELDS, "canonical_version", "hash")
MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class EventFilter:
    since: datetime | None = None
    until: datetime | None = None
    principal_id: str | None = None
    organisation: str | None = None
    dataset: str | None = None
    purpose: str | None = None
    action: str | None = None
    decision: str | None = None

    def describe(self) -> str:
        """The selection as text, for the audit event of the reading."""
        parts = {name: getattr(self, name) for name in self.__dataclass_fields__ if getattr(self, name) is not None}
        return json.dumps(parts, sort_keys=True, default=str)

    def apply(self, statement: SelectT) -> SelectT:
        if self.since is not None:
            statement = statement.where(AuditEvent.occurred_at >= self.since)
        if self.until is not None:
            statement = statement.where(AuditEvent.occurred_at < self.until)
        for column, value in (
            (AuditEvent.principal_id, self.principal_id),
            (AuditEvent.organisation, self.organisation),
            (AuditEvent.dataset, self.dataset),
            (AuditEvent.purpose, self.purpose),
            (AuditEvent.action, self.action),
            (AuditEvent.decision, self.decision),
        ):
            if value is not None:
                statement = statement.where(column == value)
        return statement


def event_record(event: AuditEvent) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for name in EXPORTED_FIELDS:
        value = getattr(event, name)
        record[name] = format_timestamp(value) if isinstance(value, datetime) else value
    return record


def page(
    session: Session, where: EventFilter, *, after: int = 0, limit: int = 100
) -> tuple[list[dict[str, Any]], int | None]:
    """Events matching ``where`` with a sequence above ``after``, oldest first; and the cursor for the next
    page (``None`` when this was the last). A cursor is a sequence number, so pages never shift when new
    events arrive."""
    limit = max(1, min(limit, MAX_PAGE))
    statement = where.apply(select(AuditEvent).where(AuditEvent.sequence > after))
    events = list(session.scalars(statement.order_by(AuditEvent.sequence).limit(limit + 1)))
    more = len(events) > limit
    events = events[:limit]
    return [event_record(event) for event in events], events[-1].sequence if more and events else None


def newest(session: Session, where: EventFilter, *, limit: int = 100) -> list[dict[str, Any]]:
    """The latest ``limit`` events matching ``where``, newest first."""
    statement = where.apply(select(AuditEvent)).order_by(AuditEvent.sequence.desc()).limit(max(1, min(limit, MAX_PAGE)))
    return [event_record(event) for event in session.scalars(statement)]


def stream(session: Session, where: EventFilter, *, batch_size: int = 2000) -> Iterator[dict[str, Any]]:
    """Every matching event, in batches (a server-side cursor on PostgreSQL), in constant memory."""
    statement = where.apply(select(AuditEvent)).order_by(AuditEvent.sequence).execution_options(yield_per=batch_size)
    result = session.scalars(statement)
    try:
        for event in result:
            yield event_record(event)
            session.expunge(event)
    finally:
        result.close()


def as_json_lines(records: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    for record in records:
        yield json.dumps(record, ensure_ascii=False, sort_keys=True).encode() + b"\n"


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""What a spreadsheet would run as a formula at the start of a cell."""


def spreadsheet_safe(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula is prefixed with ``'`` (CSV injection): callers
    control some fields, such as the purpose they name."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def as_csv(records: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EXPORTED_FIELDS, extrasaction="ignore")
    writer.writeheader()
    yield buffer.getvalue().encode()
    for record in records:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow({name: spreadsheet_safe(value) for name, value in record.items()})
        yield buffer.getvalue().encode()


def denial_summary(session: Session, where: EventFilter) -> list[dict[str, Any]]:
    """Refused requests counted by reason, action, organisation and principal, most frequent first (at
    most ``MAX_PAGE`` groups)."""
    columns = (AuditEvent.reason, AuditEvent.action, AuditEvent.organisation, AuditEvent.principal_id)
    statement = where.apply(select(*columns, func.count()).where(AuditEvent.decision == "deny"))
    statement = statement.group_by(*columns).order_by(func.count().desc(), *columns).limit(MAX_PAGE)
    return [
        {"reason": reason, "action": action, "organisation": organisation, "principal_id": principal, "count": count}
        for reason, action, organisation, principal, count in session.execute(statement)
    ]


_STATUS = {"allow": "Ok", "deny": "Unset", "error": "Error"}
"""Logboek ``status``: Error means an internal failure only; a refused request is not an Error."""


def _milliseconds(timestamp: Any) -> int | None:
    if timestamp is None:
        return None
    return int(datetime.fromisoformat(str(timestamp).replace("Z", "+00:00")).timestamp() * 1000)


def logboek_record(record: dict[str, Any]) -> dict[str, Any]:
    """One event in the shape of a Logboek Dataverwerkingen record (an OpenTelemetry-like span).

    The standard keeps who acted out of the processing log (that is the audit log's business), so the
    principal, organisation, roles and client address are left out; purpose and legal basis live in the
    register, which ``processing_activity_id`` points to."""
    _, trace_id, span_id, _ = (record.get("traceparent") or "---").split("-")
    occurred = _milliseconds(record["occurred_at"])
    completed = _milliseconds(record.get("completed_at"))
    return {
        "trace_id": trace_id or None,
        "span_id": span_id or None,
        "parent_span_id": record.get("parent_span_id"),
        "name": record["action"],
        "start_time": occurred,
        "end_time": completed if completed is not None else occurred,
        "status": _STATUS.get(str(record["decision"]), "Unset"),
        "resource": {"service.name": "datapoort", "service.instance.id": record.get("instance")},
        "attributes": {
            "dpl.core.processing_activity_id": record.get("processing_activity_id"),
            "dpl.core.data_subject_id": record.get("data_subject_id"),
            "dpl.core.data_subject_type": record.get("data_subject_type"),
            "datapoort.dataset": record.get("dataset"),
            "datapoort.reason": record.get("reason"),
            "datapoort.privacy_cost": record.get("privacy_cost"),
            "datapoort.rows_released": record.get("rows_released"),
            "datapoort.sequence": record["sequence"],
            "datapoort.hash": record["hash"],
        },
    }


def as_logboek(records: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    for record in records:
        yield json.dumps(logboek_record(record), ensure_ascii=False, sort_keys=True).encode() + b"\n"


def event_at(session: Session, sequence: int) -> dict[str, Any] | None:
    event = session.get(AuditEvent, sequence)
    return event_record(event) if event is not None else None


_TRACE_ID = re.compile(r"[0-9a-f]{32}")


def trace_id_of(traceparent: str | None) -> str | None:
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def trace_events(session: Session, trace_id: str, *, limit: int = 200) -> list[dict[str, Any]]:
    """The events of one W3C trace (a request and what it caused: peers asked, an extract's end), oldest
    first. A scan over ``traceparent`` by its fixed layout ``00-<trace id>-<span>-<flags>``."""
    if not _TRACE_ID.fullmatch(trace_id):  # also keeps LIKE's wildcards out of the pattern
        return []
    statement = select(AuditEvent).where(AuditEvent.traceparent.like(f"__-{trace_id}-%"))
    return [event_record(event) for event in session.scalars(statement.order_by(AuditEvent.sequence).limit(limit))]


def decisions_since(session: Session, since: datetime) -> dict[str, int]:
    """Events since ``since`` per decision (allow, deny, error)."""
    statement = select(AuditEvent.decision, func.count()).where(AuditEvent.occurred_at >= since)
    return {str(decision): int(count) for decision, count in session.execute(statement.group_by(AuditEvent.decision))}


def privacy_cost_since(session: Session, since: datetime) -> float:
    """Epsilon the events since ``since`` record as spent (answers and charged failures)."""
    total = session.scalar(select(func.sum(AuditEvent.privacy_cost)).where(AuditEvent.occurred_at >= since))
    return float(total or 0.0)
