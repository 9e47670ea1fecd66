"""Bounded work per process: at most ``max_in_flight`` ``/v1`` requests run at once; the rest wait in line
for at most ``queue_seconds`` and are then answered 503 ``overloaded`` with ``Retry-After``.

Without it a burst took every request thread, each waiting on a connection or the SQLite write lock held
by a request whose route had no thread left to run on: nearly every request then failed after a minute,
and many without an audit event. With admission before any thread or connection is taken, an admitted
request always finds both, and a refused one costs the gateway almost nothing.

Refusals for overload are audited, but not one event each: when writing events is what the gateway has
too much of, an event per refusal would feed the overload. They are counted, with their request ids, and
written as one ``overload`` summary event per interval (``OverloadLedger``); a refusal carries no data,
so nothing leaves unaudited.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Receive, Scope, Send

from audit.exceptions import AuditUnavailable
from gateway.audit_trail import AuditContext, commit_with_event
from gateway.http.errors import send_error

logger = logging.getLogger("datapoort.admission")
OVERLOAD_ACTION = "overload"
MAX_IDS_PER_EVENT = 150
"""So that an event's detail (bounded at 20,000 characters) holds every request id it counts."""


@dataclass(slots=True)
class OverloadLedger:
    """Overload refusals not yet written, and the thread that writes them as summary events."""

    sessions: sessionmaker[Session] | None = None
    instance: str = "datapoort"
    interval_seconds: float = 1.0
    on_refusal: Callable[[], None] | None = None
    """Told of each refusal as it happens (the metrics), not only when its summary is written."""
    _pending: list[tuple[str, str, str | None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def record(self, request_id: str, path: str, client: str | None) -> None:
        with self._lock:
            self._pending.append((request_id, path, client))
        if self.on_refusal is not None:
            self.on_refusal()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="datapoort-overload-ledger", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_seconds):
            self.flush()

    def flush(self) -> int:
        """Write what is pending as summary events (each listing at most ``MAX_IDS_PER_EVENT`` request
        ids); on failure the refusals stay pending for the next try. Returns how many were written."""
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending or self.sessions is None:
            return 0
        written = 0
        try:
            for start in range(0, len(pending), MAX_IDS_PER_EVENT):
                chunk = pending[start : start + MAX_IDS_PER_EVENT]
                context = AuditContext.for_system("system:admission", action=OVERLOAD_ACTION, instance=self.instance)
                context.event.query = f"{len(chunk)} requests refused for overload"
                detail = json.dumps(
                    {
                        "refused": len(chunk),
                        "until": datetime.now(UTC).isoformat(),
                        "requests": [
                            {"request_id": request_id, "path": path, "client_address": client}
                            for request_id, path, client in chunk
                        ],
                    }
                )
                with self.sessions() as session:
                    commit_with_event(
                        session,
                        context,
                        context.finish(decision="deny", reason="overloaded", rows_released=0, detail=detail),
                    )
                written += len(chunk)
        except (AuditUnavailable, SQLAlchemyError):
            logger.error("overload refusals could not be audited yet; they stay pending")
            with self._lock:
                self._pending[:0] = pending[written:]
        return written


class AdmissionControl:
    """ASGI middleware in front of the ``/v1`` routes: a semaphore with a deadline."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_in_flight: int,
        queue_seconds: float,
        ledger: OverloadLedger,
        prefix: str = "/v1",
    ) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.queue_seconds = queue_seconds
        self.ledger = ledger
        self.prefix = prefix
        self._slots: asyncio.Semaphore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope["path"]).startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        if self._slots is None:  # made in the server's event loop, on first use
            self._slots = asyncio.Semaphore(self.max_in_flight)
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout=self.queue_seconds)
        except TimeoutError:
            await self._refuse(scope, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self._slots.release()

    async def _refuse(self, scope: Scope, send: Send) -> None:
        context: AuditContext | None = scope.get("state", {}).get("audit")
        request_id = context.request_id if context is not None else None
        if context is not None:
            context.written = True  # counted in the summary event instead
            # Short fields, so that MAX_IDS_PER_EVENT entries always fit an event's bounded detail.
            client = (context.event.client_address or "")[:45] or None
            self.ledger.record(context.request_id, str(scope["path"])[:64], client)
        detail = "the gateway is at capacity; try again shortly"
        await send_error(send, 503, "overloaded", detail, request_id, [(b"retry-after", b"1")])
