"""Request identity for every call: a request id, W3C trace context, and (under /v1) the audit context.

A plain ASGI middleware rather than Starlette's ``BaseHTTPMiddleware``: it adds two headers and one
object to the scope, and is not worth the extra task and stream copy per request.
"""

from __future__ import annotations

import secrets

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.audit_trail import AuditContext, new_traceparent, parent_span
from gateway.http.logging_setup import REQUEST_IDS

AUDITED_PREFIXES = ("/v1", "/console")
"""The API and the console: every request under these gets an audit context (the console's static files
and its sign-in form hold no data and are not audited)."""
UNAUDITED_PREFIXES = ("/console/static/",)


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, instance: str) -> None:
        self.app = app
        self.instance = instance

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = Headers(scope=scope).get("traceparent")
        traceparent = new_traceparent(incoming)
        request_id = secrets.token_hex(16)
        path: str = scope["path"]
        if path.startswith(AUDITED_PREFIXES) and not path.startswith(UNAUDITED_PREFIXES):
            client = scope.get("client")
            scope.setdefault("state", {})["audit"] = AuditContext.start(
                request_id=request_id,
                traceparent=traceparent,
                client_address=client[0] if client else None,
                instance=self.instance,
                action=f"{scope['method']} {path}"[:64],
            )
            scope["state"]["audit"].event.parent_span_id = parent_span(incoming)

        async def send_with_ids(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = request_id
                headers["traceparent"] = traceparent
                # Answers hold personal data's aggregates and audit records: never cached, never sniffed
                # into another type, never framed.
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Cache-Control"] = "no-store"
                headers["X-Frame-Options"] = "DENY"
                headers["Referrer-Policy"] = "no-referrer"
            await send(message)

        ids = REQUEST_IDS.set((request_id, traceparent.split("-")[1]))  # for the log lines of this request
        try:
            await self.app(scope, receive, send_with_ids)
        finally:
            REQUEST_IDS.reset(ids)
