"""The largest request body the gateway reads: refused (413 ``body_too_large``, audited) from the
``Content-Length`` header before a byte is read, and, for a body without one, as soon as more arrives than
allowed. Nothing larger is ever held in memory."""

from __future__ import annotations

import anyio
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from audit.exceptions import AuditUnavailable
from gateway.audit_trail import AuditContext, write_refusal
from gateway.http.errors import send_error


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(scope, send)
            return
        received = 0
        started = refused = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes and not started:
                    # Answer now and tell the app the client has gone: it stops reading, and whatever it
                    # would still send is dropped.
                    refused = True
                    await self._refuse(scope, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counting_receive, guarded_send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        status, code = 413, "body_too_large"
        detail = f"the request body may hold at most {self.max_bytes} bytes"
        context: AuditContext | None = scope.get("state", {}).get("audit")
        if context is not None and not context.written:
            app = scope["app"]
            try:
                await anyio.to_thread.run_sync(
                    write_refusal,
                    app.state.sessions,
                    context,
                    context.finish(decision="deny", reason=code, detail=detail),
                )
            except AuditUnavailable:
                status, code, detail = (
                    503,
                    AuditUnavailable.code,
                    "the request could not be audited, so it is not answered",
                )
        await send_error(send, status, code, detail, context.request_id if context else None)
