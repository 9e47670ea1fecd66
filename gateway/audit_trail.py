"""The audit event of the current request: collected while the request runs, written exactly once.

Every ``/v1`` request gets an ``AuditContext`` from the middleware. The route fills in what it learns
(principal, dataset, purpose, the normalised query). A successful request writes its event in the same
transaction as its budget spend, before the answer is sent; a refused or failed request writes its event
from the error handler. If the event cannot be written, nothing but a 503 leaves the gateway.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from audit import service as audit_service
from audit.exceptions import AuditUnavailable
from audit.models import AuditEvent
from policies import console_sessions
from policies import service as policy_service
from policies.management import Change

logger = logging.getLogger("datapoort.audit_trail")

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def parent_span(incoming: str | None) -> str | None:
    """The caller's span id from a valid incoming ``traceparent``: the parent of this request's span."""
    match = _TRACEPARENT.fullmatch(incoming or "")
    return match.group(2) if match and match.group(2) != "0" * 16 else None


def new_traceparent(incoming: str | None) -> str:
    """Continue an incoming W3C trace (same trace id, new span id for this request) or start a new one."""
    match = _TRACEPARENT.fullmatch(incoming or "")
    trace_id = match.group(1) if match and match.group(1) != "0" * 32 else secrets.token_hex(16)
    flags = match.group(3) if match else "01"
    return f"00-{trace_id}-{secrets.token_hex(8)}-{flags}"


@dataclass(slots=True)
class AuditContext:
    """The request's event in the making. ``event`` collects what the request learns as it goes (its
    ``decision`` stays ``pending``); ``finish`` fixes the outcome into the event that is written."""

    event: audit_service.EventDraft
    written: bool = False
    key_id: str | None = None
    """The API key the request authenticated with; its last-used time is written with the event."""
    charged: float | None = None
    """Epsilon a reservation of this request keeps counting although no answer left (it could not be
    handed back): recorded as the event's cost, so ledger and event agree."""
    console_session_id: str | None = None
    """The console session the request came with; its last use is written with the event."""

    @classmethod
    def start(
        cls, *, request_id: str, action: str, traceparent: str, client_address: str | None, instance: str
    ) -> AuditContext:
        return cls(
            audit_service.EventDraft(
                request_id=request_id,
                action=action,
                decision="pending",
                traceparent=traceparent,
                client_address=client_address,
                instance=instance,
            )
        )

    @classmethod
    def for_system(cls, actor: str, *, action: str, instance: str, request_id: str | None = None) -> AuditContext:
        """The event of work done outside a request (the CLI, the demo set-up, a token user's role sync),
        in a new trace, recorded under ``actor`` (``system:...``)."""
        context = cls.start(
            request_id=request_id or secrets.token_hex(16),
            action=action,
            traceparent=new_traceparent(None),
            client_address=None,
            instance=instance,
        )
        context.event.principal_id = actor
        return context

    @property
    def request_id(self) -> str:
        return self.event.request_id

    @property
    def started_at(self) -> datetime:
        return self.event.occurred_at

    def finish(
        self,
        *,
        decision: str,
        reason: str | None = None,
        detail: str | None = None,
        privacy_cost: float | None = None,
        rows_released: int | None = None,
        response_body: bytes | None = None,
    ) -> audit_service.EventDraft:
        return replace(
            self.event,
            decision=decision,
            reason=reason,
            detail=_bounded(detail),
            privacy_cost=privacy_cost if privacy_cost is not None else self.charged,
            rows_released=rows_released,
            response_digest=hashlib.sha256(response_body).hexdigest() if response_body is not None else None,
        )


_MAX_DETAIL = 20_000


def _bounded(text: str | None) -> str | None:
    """A detail can quote a source's message of any length; the event keeps a bounded part of it (NUL
    characters are replaced for every field when the event is written, in ``commit_with_event``)."""
    return None if text is None else text[:_MAX_DETAIL]


MAX_QUERY_CHARS = 4_000
"""The query text an event keeps; a longer one is cut, with its length and SHA-256 kept so the whole can
still be matched. Events must not be a way to fill the log (a 2.8 MB plan made a 2.8 MB event)."""


def capped_query(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_QUERY_CHARS:
        return text
    digest = hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()
    return f"{text[:MAX_QUERY_CHARS]} ... [{len(text)} characters in all, sha256 {digest}]"


def _without_nul(draft: audit_service.EventDraft) -> audit_service.EventDraft:
    """Callers choose some fields (a purpose, a query's text); PostgreSQL refuses NUL in text, and an
    event must not fail to be written because of what a caller typed."""
    cleaned: dict[str, Any] = {
        name: value.replace("\x00", "\ufffd")
        for name, value in asdict(draft).items()
        if isinstance(value, str) and "\x00" in value
    }
    return replace(draft, **cleaned) if cleaned else draft


SNAPSHOT_OPTIONS = ("datapoort_snapshot", "postgresql_readonly")
"""The execution options ``gateway.store.database.read_snapshot`` marks a read-only snapshot with."""


def _end_snapshot(session: Session) -> None:
    """A read-only snapshot cannot take a write: it ends (it holds nothing to keep) before the event's
    own short write transaction begins."""
    if session.in_transaction():
        options = session.connection().get_execution_options()
        if any(options.get(option) for option in SNAPSHOT_OPTIONS):
            session.commit()


AUDIT_OBSERVER_KEY = "datapoort_audit_observer"
"""Where a session finds its ``AuditObserver`` (``Session.info``), put there by ``observe_audit``."""


class AuditObserver(Protocol):
    """Told of every committed event (e.g. the app's metrics): the one place every spend passes."""

    def audit_committed(self, event: AuditEvent, seconds: float) -> None: ...


def observe_audit(sessions: sessionmaker[Session], observer: AuditObserver) -> None:
    """Have every session of ``sessions`` tell ``observer`` of the events it commits. In the sessions'
    info rather than a global, so that several apps in one process (tests) each see their own."""
    sessions.configure(info={**sessions.kw.get("info", {}), AUDIT_OBSERVER_KEY: observer})


def commit_with_event(session: Session, context: AuditContext, draft: audit_service.EventDraft) -> None:
    """Append the event to the request's transaction and commit both; fail closed on any error. After a
    read-only snapshot (the request's reads), the event is written in a transaction of its own."""
    try:
        _end_snapshot(session)
        if context.key_id is not None:
            policy_service.record_key_use(session, context.key_id, draft.occurred_at)
        if context.console_session_id is not None:
            console_sessions.touch(session, context.console_session_id, draft.occurred_at)
        draft = _without_nul(replace(draft, query=capped_query(draft.query)))
        if draft.purpose is not None and draft.processing_activity_id is None:
            draft = replace(draft, processing_activity_id=policy_service.register_uri(session, draft.purpose))
        started = time.perf_counter()
        event = audit_service.append_event(session, draft)
        session.commit()
    except SQLAlchemyError as exc:
        session.rollback()
        logger.error("the audit event could not be committed: %s", type(exc).__name__)
        raise AuditUnavailable("the audit event could not be committed") from exc
    except AuditUnavailable:
        session.rollback()
        raise
    context.written = True
    observer: AuditObserver | None = session.info.get(AUDIT_OBSERVER_KEY)
    if observer is not None:
        observer.audit_committed(event, time.perf_counter() - started)


def describe_change(context: AuditContext, change: Change) -> str:
    """Put an administrative change into the request's event: what and which object as the event's
    query, who made it is the event's principal, and before and after (JSON) as its detail."""
    context.event.query = f"{change.what} {change.target}"
    return json.dumps(change.describe(), ensure_ascii=False, sort_keys=True, default=str)


def write_refusal(sessions: sessionmaker[Session], context: AuditContext, draft: audit_service.EventDraft) -> None:
    """Write the event of a refused or failed request in a transaction of its own."""
    with sessions() as session:
        commit_with_event(session, context, draft)
