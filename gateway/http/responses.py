"""An allowed answer leaves only after its audit event is committed, with the digest of exactly its bytes."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Response
from sqlalchemy.orm import Session

from gateway.audit_trail import AuditContext, commit_with_event


def respond(
    session: Session,
    context: AuditContext,
    payload: dict[str, Any],
    *,
    privacy_cost: float | None = None,
    rows_released: int | None = None,
    detail: str | None = None,
    status_code: int = 200,
    digest: bool = True,
) -> Response:
    """Serialise an allowed answer, commit its event (with the digest of exactly these bytes, unless
    ``digest`` is off) in the request's transaction, and only then hand the bytes out."""
    content = json.dumps(payload, ensure_ascii=False, allow_nan=False).encode()
    event = context.finish(
        decision="allow",
        privacy_cost=privacy_cost,
        rows_released=rows_released,
        response_body=content if digest else None,
        detail=detail,
    )
    commit_with_event(session, context, event)
    return Response(content=content, media_type="application/json", status_code=status_code)
