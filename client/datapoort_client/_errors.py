"""The gateway's refusals as typed exceptions, chosen by the stable ``error`` code of the body.

Every refusal of a Datapoort gateway is ``{"error": code, "detail": ..., "request_id": ...}``; the code
says what happened, the status only how serious it is. The code picks the class, so a caller can catch
``BudgetExhausted`` instead of parsing text; a code this client does not know yet falls back to the
class of its status, and a body that is not the gateway's (a proxy's page) to ``DatapoortError``.

DatapoortError
 ├── AuthenticationFailed   401: no valid key
 ├── PolicyDenied           403: no grant allows this, for this purpose
 ├── BudgetExhausted        429: the privacy budget cannot pay for it (nothing was spent)
 ├── RateLimited            429: too many requests; ``retry_after`` seconds
 ├── InvalidRequest         400, 413, 422: the request itself is wrong
 │    ├── InvalidQuery        the SQL or plan cannot be parsed, or its epsilon/delta is out of range
 │    ├── QueryNotSupported   valid SQL outside the subset the gateway answers
 │    ├── UnknownDataset      a dataset the catalog does not hold (``UnknownColumn``: a column)
 │    ├── InvalidExtract      an extract its export profile cannot serve
 │    └── RequestTooLarge     the body is larger than the gateway accepts
 ├── NotFound               404
 ├── Conflict               409
 ├── Unavailable            503 (502, 504 from a proxy): a part of the gateway is down
 │    ├── Overloaded          at capacity; ``retry_after`` seconds
 │    ├── StatementTimeout    the query ran too long and was stopped (it stays charged)
 │    └── ConnectionFailed    the gateway could not be reached (no status)
 └── ServerError            500
"""

from __future__ import annotations

import json
from email.utils import parsedate_to_datetime
from typing import Any

import httpx


class DatapoortError(Exception):
    """A refusal or failure: the gateway's ``code`` and ``detail``, the HTTP ``status`` (``None`` when
    no answer came) and the ``request_id`` under which the gateway audited it."""

    def __init__(
        self,
        code: str,
        detail: Any,
        status: int | None = None,
        request_id: str | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(code, detail, status, request_id)
        self.code = code
        self.detail = detail
        self.status = status
        self.request_id = request_id
        self.body: dict[str, Any] = body or {}
        """The whole error body, for fields this client does not name."""

    def __str__(self) -> str:
        where = f" (request {self.request_id})" if self.request_id else ""
        status = f"{self.status} " if self.status is not None else ""
        return f"{status}{self.code}: {self.detail}{where}"


class AuthenticationFailed(DatapoortError):
    pass


class PolicyDenied(DatapoortError):
    pass


class BudgetExhausted(DatapoortError):
    """The grant's budget for the period cannot pay for the query: what is left and what it asked."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.epsilon_remaining: float | None = _number(self.body.get("epsilon_remaining"))
        self.epsilon_requested: float | None = _number(self.body.get("epsilon_requested"))
        self.delta_remaining: float | None = _number(self.body.get("delta_remaining"))
        self.delta_requested: float | None = _number(self.body.get("delta_requested"))


class RateLimited(DatapoortError):
    """``retry_after``: the seconds the gateway asked to wait (its ``Retry-After``), if it said."""

    retry_after: float | None = None


class InvalidRequest(DatapoortError):
    pass


class InvalidQuery(InvalidRequest):
    pass


class QueryNotSupported(InvalidRequest):
    pass


class UnknownDataset(InvalidRequest):
    pass


class UnknownColumn(InvalidRequest):
    pass


class InvalidExtract(InvalidRequest):
    pass


class RequestTooLarge(InvalidRequest):
    pass


class NotFound(DatapoortError):
    pass


class Conflict(DatapoortError):
    pass


class Unavailable(DatapoortError):
    pass


class Overloaded(Unavailable):
    """``retry_after``: the seconds the gateway asked to wait (its ``Retry-After``), if it said."""

    retry_after: float | None = None


class StatementTimeout(Unavailable):
    pass


class ConnectionFailed(Unavailable):
    """No answer: the gateway could not be reached, or the connection broke. A query, extract or
    comparison that fails so may have been charged; ``Gateway.budget()`` tells."""


class ServerError(DatapoortError):
    pass


BY_CODE: dict[str, type[DatapoortError]] = {
    "authentication_failed": AuthenticationFailed,
    "policy_denied": PolicyDenied,
    "csrf_failed": PolicyDenied,
    "budget_exhausted": BudgetExhausted,
    "rate_limited": RateLimited,
    "invalid_request": InvalidRequest,
    "http_error": InvalidRequest,
    "method_not_allowed": InvalidRequest,
    "invalid_query": InvalidQuery,
    "invalid_privacy_parameter": InvalidQuery,
    "query_not_supported": QueryNotSupported,
    "unknown_dataset": UnknownDataset,
    "unknown_column": UnknownColumn,
    "invalid_extract": InvalidExtract,
    "invalid_dataset": InvalidRequest,
    "body_too_large": RequestTooLarge,
    "not_found": NotFound,
    "dataset_not_found": NotFound,
    "policy_conflict": Conflict,
    "overloaded": Overloaded,
    "statement_timeout": StatementTimeout,
    "source_unavailable": Unavailable,
    "audit_unavailable": Unavailable,
    "state_unavailable": Unavailable,
    "catalog_invalid": Unavailable,
    "not_configured": Unavailable,
    "internal_error": ServerError,
}
"""The codes of the gateway's error bodies (``gateway/http/errors.py`` and the exceptions' ``code``)."""

BY_STATUS: dict[int, type[DatapoortError]] = {
    400: InvalidRequest,
    401: AuthenticationFailed,
    403: PolicyDenied,
    404: NotFound,
    409: Conflict,
    413: RequestTooLarge,
    422: InvalidRequest,
    429: RateLimited,
    500: ServerError,
    502: Unavailable,  # a proxy in front of the gateway: it did not answer
    503: Unavailable,
    504: Unavailable,
}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def retry_after(response: httpx.Response) -> float | None:
    """The ``Retry-After`` header in seconds (a number or an HTTP date), or ``None``."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    served = response.headers.get("date")
    try:
        now = parsedate_to_datetime(served) if served else None
    except (TypeError, ValueError):
        now = None
    if now is None:
        return None
    return max((when - now).total_seconds(), 0.0)


def error_code(response: httpx.Response) -> tuple[str | None, dict[str, Any]]:
    """The body's ``error`` code and the body, if it is the gateway's error body (read it first)."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return None, {}
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        return None, {}
    return body["error"], body


def from_response(response: httpx.Response) -> DatapoortError:
    """The exception for a refused answer (its body already read)."""
    code, body = error_code(response)
    status = response.status_code
    kind = BY_CODE.get(code or "") or BY_STATUS.get(status) or (ServerError if status >= 500 else DatapoortError)
    if code is None:
        text = response.text[:500] if response.content else response.reason_phrase
        error = kind(f"http_{status}", text, status, response.headers.get("x-request-id"))
    else:
        request_id = body.get("request_id")
        error = kind(code, body.get("detail"), status, request_id if isinstance(request_id, str) else None, body)
    if isinstance(error, RateLimited | Overloaded):
        error.retry_after = retry_after(response)
    return error
