"""The gateway's logs: one JSON object per line (or plain text), with the request and trace ids, and
secrets scrubbed out before anything is written.

Logs go where audit events do not: to log shippers, terminals, tickets. So a line never carries what
would identify a caller or a person: API keys (``dpk_...``), bearer tokens and JWTs, anything after
``Authorization:``, and 8 or 9 digit numbers (BSNs look like that; so do a few harmless numbers, which
is a price worth paying) become ``[redacted]``. Query results are never logged at all; the scrubbing
is the net under that rule, not a licence to log data.

The request and trace ids come from a context variable that ``RequestContextMiddleware`` sets for each
request, so a line can be matched to the request's audit event (same request id, same trace).
"""

from __future__ import annotations

import json
import logging
import re
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

REQUEST_IDS: ContextVar[tuple[str, str] | None] = ContextVar("datapoort_request_ids", default=None)
"""(request id, trace id) of the request being served, if any."""

REDACTED = "[redacted]"
_SCRUBBERS = (
    (re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*)[^\r\n]*"), r"\1" + REDACTED),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1" + REDACTED),
    (re.compile(r"dpk_[A-Za-z0-9_-]+"), REDACTED),
    (re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), REDACTED),
    (re.compile(r"(?i)(://[^/\s:@]+:)[^@\s]+@"), r"\1" + REDACTED + "@"),  # a password in a URL
    (re.compile(r"(?i)(client_secret['\"]?\s*[:=]\s*)[^\s&,]+"), r"\1" + REDACTED),
    # BSNs also as written on letters (123.456.782, 1234 56 782) and glued to a word (bsn123456782);
    # not inside a hex id (request ids, hashes), nor with dashes, which would take every date.
    (re.compile(r"(?<![0-9A-Fa-f])[0-9](?:[ .]?[0-9]){7,8}(?![0-9A-Fa-f])"), REDACTED),
)


def scrub(text: str) -> str:
    """``text`` without API keys, tokens, authorization headers and numbers that could be BSNs."""
    for pattern, replacement in _SCRUBBERS:
        text = pattern.sub(replacement, text)
    return text


def _ids() -> tuple[str | None, str | None]:
    ids = REQUEST_IDS.get()
    return ids if ids is not None else (None, None)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, request_id, trace_id,
    and the exception's text if there is one; every text scrubbed."""

    def format(self, record: logging.LogRecord) -> str:
        request_id, trace_id = _ids()
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": scrub(record.getMessage()),
            "request_id": request_id,
            "trace_id": trace_id,
        }
        if record.exc_info:
            line["exception"] = scrub(self.formatException(record.exc_info))
        if record.stack_info:
            line["stack"] = scrub(self.formatStack(record.stack_info))
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """Plain lines for a terminal, with the request id, scrubbed the same way."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.request_id = _ids()[0] or "-"
        return scrub(super().format(record))


def log_config(log_format: Literal["json", "text"] = "json", level: str = "INFO") -> dict[str, Any]:
    """The ``logging.config.dictConfig`` that ``datapoort serve`` gives uvicorn: its loggers and the
    gateway's (``datapoort.*``, through the root) all through one scrubbing handler on stderr."""
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    handler = {"class": "logging.StreamHandler", "formatter": "datapoort", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"datapoort": {"()": f"{formatter.__module__}.{formatter.__qualname__}"}},
        "handlers": {"stderr": handler},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"level": level},
        },
        "root": {"handlers": ["stderr"], "level": level},
    }
