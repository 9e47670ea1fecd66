"""Exceptions of the policies domain, each with a stable ``code``; the gateway maps them to HTTP.

PolicyError
 ├── AuthenticationFailed   no valid credential (unknown, malformed, expired or revoked key)
 ├── PolicyDenied           authenticated, but no active grant allows this action for this purpose
 ├── BudgetExhausted        the grant's privacy budget for the period cannot pay for the query
 ├── PolicyConflict         a management change that would contradict the existing state
 └── UnknownObject          a management change names an object that does not exist
"""

from __future__ import annotations


class PolicyError(Exception):
    code = "policy_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AuthenticationFailed(PolicyError):
    code = "authentication_failed"


class PolicyDenied(PolicyError):
    code = "policy_denied"


class BudgetExhausted(PolicyError):
    code = "budget_exhausted"

    def __init__(
        self,
        message: str,
        *,
        remaining: float,
        requested: float,
        delta_remaining: float = 0.0,
        delta_requested: float = 0.0,
    ) -> None:
        super().__init__(message)
        self.remaining = remaining
        self.requested = requested
        self.delta_remaining = delta_remaining
        self.delta_requested = delta_requested


class PolicyConflict(PolicyError):
    code = "policy_conflict"


class UnknownObject(PolicyError):
    code = "not_found"
