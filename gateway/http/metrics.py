"""Prometheus metrics for the operator: requests, latency, epsilon spent, the audit log and overload.

Each app has a ``CollectorRegistry`` of its own, not prometheus_client's global one: several apps in one
process (the tests) must not count into each other, nor fail registering the same names twice.

Labels are route templates (``/v1/datasets/{name}``), never raw paths: a path holds whatever the caller
typed, and one label value per typed path would grow without bound. A path that matches no route counts
as ``other``. Epsilon is counted from the committed audit events (``gateway.audit_trail``), the one place
every spend passes, so the metric and the log cannot disagree.

``/metrics`` holds no personal data, only counts per route, status and dataset; it is not under ``/v1``
and so is not audited. It is still not public: the main port serves it only to the bearer token in
``DATAPOORT_METRICS_TOKEN_PATH`` (404 if none is configured, 401 for a wrong or missing token), and
``DATAPOORT_METRICS_BIND`` serves the same registry without a token on an address of its own, for a
scraper on a network the operator keeps private.
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import start_http_server
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException
from starlette.routing import Match, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from audit.models import AuditEvent
from gateway.audit_trail import observe_audit
from policies.exceptions import AuthenticationFailed

OTHER_ROUTE = "other"
_AUDIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The app's registry and its metrics; also the ``AuditObserver`` of the app's sessions."""

    def __init__(self, token_path: Path | None = None) -> None:
        self.token_path = token_path
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "datapoort_requests", "HTTP requests answered, by route template and status.", ["route", "status"],
            registry=registry,
        )  # fmt: skip
        self.latency = Histogram(
            "datapoort_request_duration_seconds", "Time to answer, to the last byte, by route template.", ["route"],
            registry=registry,
        )  # fmt: skip
        self.epsilon = Counter(
            "datapoort_epsilon_spent", "Epsilon spent, from committed audit events, by dataset.", ["dataset"],
            registry=registry,
        )  # fmt: skip
        self.audit_append = Histogram(
            "datapoort_audit_append_duration_seconds", "Appending an audit event and committing it.",
            buckets=_AUDIT_BUCKETS, registry=registry,
        )  # fmt: skip
        self.chain_head = Gauge(
            "datapoort_audit_chain_head_sequence", "The sequence of the newest audit event.", registry=registry
        )
        self.overload_refusals = Counter(
            "datapoort_overload_refusals", "Requests refused 503 overloaded by admission control.", registry=registry
        )
        self.catalog_datasets = Gauge("datapoort_catalog_datasets", "Datasets in the live catalog.", registry=registry)
        self.catalog_version = Gauge("datapoort_catalog_version", "Version of the live catalog.", registry=registry)

    def audit_committed(self, event: AuditEvent, seconds: float) -> None:
        self.audit_append.observe(seconds)
        self.chain_head.set(event.sequence)
        if event.privacy_cost and event.dataset is not None:
            self.epsilon.labels(event.dataset).inc(event.privacy_cost)

    def overload_refused(self) -> None:
        self.overload_refusals.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def set_catalog(metrics: Metrics, version: float, datasets: int) -> None:
    """For whoever (re)loads the catalog: its version and how many datasets it holds."""
    metrics.catalog_version.set(version)
    metrics.catalog_datasets.set(datasets)


def _templates(app: Any) -> list[tuple[re.Pattern[str], str]]:
    """The API's path templates, from its OpenAPI document (public, whatever the router's internals),
    literal ones first so ``/v1/query/estimate`` is not taken for a ``{name}``."""
    paths = sorted(app.openapi().get("paths", {}), key=lambda path: (path.count("{"), path))
    return [(compile_path(path)[0], path) for path in paths]


def route_template(scope: Scope, templates: Callable[[], list[tuple[re.Pattern[str], str]]]) -> str:
    """The template of the route that answered, or would have: a request refused before routing (by
    admission or the body limit) still counts under its route. ``other`` for any path without one."""
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str) and path:
        return path
    for candidate in getattr(scope.get("app"), "routes", ()):  # mounts and the app's own routes
        if candidate.matches(scope)[0] is Match.FULL and isinstance(getattr(candidate, "path", None), str):
            return str(candidate.path)
    return next((path for pattern, path in templates() if pattern.match(scope["path"])), OTHER_ROUTE)


class RequestMetrics:
    """ASGI middleware, outermost: counts every answer and times it to its last byte."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self._templates: list[tuple[re.Pattern[str], str]] | None = None

    def templates(self, scope: Scope) -> list[tuple[re.Pattern[str], str]]:
        """Made once, on first need: the routes are all there by then."""
        if self._templates is None:
            self._templates = _templates(scope["app"]) if "app" in scope else []
        return self._templates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an app that fails before it answers is answered 500 by the server

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            route = route_template(scope, lambda: self.templates(scope))
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)


def _bind_address(bind: str) -> tuple[str, int]:
    host, _, port = bind.rpartition(":")
    return host.strip("[]"), int(port)


@contextmanager
def serving(metrics: Metrics, sessions: sessionmaker[Session], bind: str | None) -> Iterator[None]:
    """While the app runs: count its audit events, start from the log's current head, and (with
    ``bind``) serve the registry on a second address, stopped at shutdown."""
    observe_audit(sessions, metrics)
    with sessions() as session:
        head = session.scalar(select(func.max(AuditEvent.sequence)))
    if head is not None:
        metrics.chain_head.set(head)
    if bind is None:
        yield
        return
    host, port = _bind_address(bind)
    server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


router = APIRouter()


def _expected_token(path: Path) -> bytes | None:
    """Read at every scrape, so a rotated token file takes effect without a restart; an unreadable or
    empty file admits no one."""
    try:
        token = path.read_bytes().strip()
    except OSError:
        return None
    return token or None


@router.get("/metrics", include_in_schema=False)
def get_metrics(request: Request) -> Response:
    """The registry, to the operator's token only. Not audited: no personal data, only counts."""
    metrics: Metrics = request.app.state.metrics
    if metrics.token_path is None:
        raise HTTPException(404)  # as if there were no such route
    expected = _expected_token(metrics.token_path)
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if expected is None or scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise AuthenticationFailed("the metrics token is missing or wrong")
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
