"""The one place where domain exceptions become HTTP responses.

Every error body is ``{"error": <stable code>, "detail": <human text>, "request_id": ...}``. Each refused
or failed ``/v1`` request is audited here before the response is sent; if that audit write fails the
response becomes 503 ``audit_unavailable`` instead (fail closed).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from anonymization import AnonymizationError, InvalidPrivacyParameter
from audit.exceptions import AuditError, AuditUnavailable
from gateway import exceptions as gateway_errors
from gateway.audit_trail import AuditContext, write_refusal
from gateway.http.rate_limit import RateLimited
from policies import exceptions as policy_errors

logger = logging.getLogger("datapoort.errors")

STATUS_BY_EXCEPTION: dict[type[Exception], int] = {
    policy_errors.AuthenticationFailed: 401,
    policy_errors.PolicyDenied: 403,
    policy_errors.BudgetExhausted: 429,
    RateLimited: 429,
    policy_errors.PolicyConflict: 409,
    policy_errors.UnknownObject: 404,
    gateway_errors.DatasetNotFound: 404,
    gateway_errors.UnknownDataset: 400,
    gateway_errors.InvalidDatasetChange: 400,
    gateway_errors.UnknownColumn: 400,
    gateway_errors.QueryNotSupported: 400,
    gateway_errors.InvalidQuery: 400,
    gateway_errors.InvalidExtract: 400,
    gateway_errors.NotFound: 404,
    gateway_errors.FormRejected: 403,
    gateway_errors.ConfigurationError: 503,
    InvalidPrivacyParameter: 400,
    gateway_errors.SourceUnavailable: 503,
    gateway_errors.CatalogError: 503,
    AuditUnavailable: 503,
}

DomainError = gateway_errors.GatewayError | policy_errors.PolicyError | AuditError | AnonymizationError


class ErrorBody(BaseModel):
    """Every refusal and failure: a stable code, a human text, and the request id of its audit event."""

    error: str
    detail: Any
    request_id: str | None = None


_MEANING = {
    400: "The question or request is not valid (invalid_query, query_not_supported, unknown_dataset ...)",
    401: "No valid API key or identity-provider token",
    403: "Not allowed by the policies, for this purpose",
    404: "No such object you may see",
    409: "In conflict with what exists",
    413: "The request body is larger than allowed",
    422: "The request does not match its schema",
    429: "The privacy budget or the rate limit does not allow it",
    503: "Overloaded, or a part that does not depend on the request is unavailable (nothing was spent)",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": meaning} for status, meaning in _MEANING.items()
}
"""What any ``/v1`` route may answer besides its own success, documented in the OpenAPI of every one."""


async def send_error(
    send: Send, status: int, code: str, detail: str, request_id: str | None, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """The same error body, from ASGI middleware that answers before the app (admission, body limit)."""
    body = json.dumps({"error": code, "detail": detail, "request_id": request_id}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def status_for(exc: Exception) -> int:
    for kind in type(exc).__mro__:
        if kind in STATUS_BY_EXCEPTION:
            return STATUS_BY_EXCEPTION[kind]
    return 500


def _body(code: str, detail: Any, request: Request, **extra: Any) -> dict[str, Any]:
    context: AuditContext | None = getattr(request.state, "audit", None)
    return {"error": code, "detail": detail, "request_id": context.request_id if context else None, **extra}


class ErrorPage(Protocol):
    """Renders refusals of the pages under ``prefix`` for a person rather than a program (the console):
    the same code and request id, after the same audit write."""

    prefix: str

    def render(
        self,
        request: Request,
        status: int,
        code: str,
        detail: Any,
        request_id: str | None,
        headers: dict[str, str] | None,
    ) -> Response: ...


def _audited_response(
    request: Request, status: int, code: str, detail: Any, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    context: AuditContext | None = getattr(request.state, "audit", None)
    if context is not None and not context.written:
        draft = context.finish(
            decision="deny" if status < 500 else "error",
            reason=code,
            detail=detail if isinstance(detail, str) else str(detail),
        )
        try:
            write_refusal(request.app.state.sessions, context, draft)
        except AuditUnavailable:
            logger.exception("audit write failed for a refused request; answering 503")
            status, headers, extra = 503, None, {}
            code, detail = AuditUnavailable.code, "the request could not be audited, so it is not answered"
    page: ErrorPage | None = getattr(request.app.state, "error_page", None)
    path = request.url.path
    if page is not None and (path == page.prefix or path.startswith(page.prefix + "/")):
        return page.render(request, status, code, detail, context.request_id if context else None, headers)
    return JSONResponse(_body(code, detail, request, **extra), status_code=status, headers=headers)


def _domain_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, DomainError):
        raise exc
    status = status_for(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(exc.retry_after)}
    extra: dict[str, Any] = {}
    if isinstance(exc, policy_errors.BudgetExhausted):
        extra = {"epsilon_remaining": exc.remaining, "epsilon_requested": exc.requested}
        if exc.delta_requested > 0:
            extra.update(delta_remaining=exc.delta_remaining, delta_requested=exc.delta_requested)
    return _audited_response(request, status, exc.code, exc.message, headers, **extra)


def _validation_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, RequestValidationError):
        raise exc
    problems = [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type", "")}
        for error in exc.errors()
    ]
    return _audited_response(request, 422, "invalid_request", problems)


def _http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, StarletteHTTPException):
        raise exc
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return _audited_response(request, exc.status_code, code, exc.detail, dict(exc.headers or {}) or None)


def _state_database_error(request: Request, exc: Exception) -> Response:
    logger.error("state database error: %s", type(exc).__name__)
    return _audited_response(request, 503, "state_unavailable", "the gateway's state database did not answer")


def _unexpected_error(request: Request, exc: Exception) -> Response:
    logger.exception("unexpected error", exc_info=exc)
    return _audited_response(request, 500, "internal_error", "an unexpected error occurred; it has been logged")


def install_error_handlers(app: FastAPI) -> None:
    for kind in (gateway_errors.GatewayError, policy_errors.PolicyError, AuditError, AnonymizationError):
        app.add_exception_handler(kind, _domain_error)
    app.add_exception_handler(SQLAlchemyError, _state_database_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
