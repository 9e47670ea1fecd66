"""Exceptions of the audit domain. The gateway maps them to HTTP responses.

AuditError
 └── AuditUnavailable   the event could not be written; the caller must release nothing (fail closed)
"""

from __future__ import annotations


class AuditError(Exception):
    code = "audit_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AuditUnavailable(AuditError):
    code = "audit_unavailable"
