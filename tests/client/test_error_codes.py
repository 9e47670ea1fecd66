"""The client knows every error code the server answers with, so none falls back to a class by status
unnoticed when the server grows a new refusal. (The test reads the server; the client never does.)"""

from __future__ import annotations

from datapoort_client import _errors

from anonymization import AnonymizationError
from audit.exceptions import AuditError
from gateway import exceptions as gateway_errors
from gateway.http import errors as http_errors
from policies.exceptions import PolicyError

ANSWERED_BEFORE_THE_APP = {
    "overloaded": 503,  # admission control
    "body_too_large": 413,  # the body limit
    "invalid_request": 422,  # schema validation
    "not_found": 404,
    "method_not_allowed": 405,
    "http_error": 400,  # routing
    "state_unavailable": 503,  # the state database failed
    "internal_error": 500,
}
"""Codes that no domain exception carries: written by middleware and handlers in ``gateway/http``."""


def _domain_errors() -> list[type[Exception]]:
    """Every exception class of the domains and the gateway (each has a ``code``)."""
    found: list[type[Exception]] = []
    pending: list[type[Exception]] = [gateway_errors.GatewayError, PolicyError, AuditError, AnonymizationError]
    while pending:
        kind = pending.pop()
        found.append(kind)
        pending.extend(kind.__subclasses__())
    return found


def test_every_code_of_a_refusal_has_its_exception() -> None:
    codes = {}
    for kind in _domain_errors():
        status = http_errors.status_for(kind.__new__(kind))
        if status != 500:  # a base class's code: answered as 500, a ServerError by status
            codes[str(getattr(kind, "code", ""))] = status
    assert {"budget_exhausted", "rate_limited", "policy_denied", "query_not_supported"} <= set(codes)
    codes.update(ANSWERED_BEFORE_THE_APP)
    unknown = sorted(code for code in codes if code not in _errors.BY_CODE)
    assert unknown == []


def test_a_code_and_its_status_agree_with_the_client_class() -> None:
    for kind in _domain_errors():
        status = http_errors.status_for(kind.__new__(kind))
        client_class = _errors.BY_CODE.get(str(getattr(kind, "code", "")))
        if status == 500 or client_class is None:
            continue
        by_status = _errors.BY_STATUS[status]
        # The class by code is the class by status or below it; an exhausted budget is 429 beside a rate limit.
        assert issubclass(client_class, by_status) or (status, client_class) == (429, _errors.BudgetExhausted), kind
