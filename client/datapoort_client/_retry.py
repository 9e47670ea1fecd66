"""When a request is sent again: only if sending it twice cannot spend twice.

Reads (``budget``, ``datasets``) and ``estimate`` change nothing at the gateway but its audit log, so
they are retried on a connection error, a 503 ``overloaded`` and a 429 ``rate_limited``, waiting what
the gateway's ``Retry-After`` asks (or a short, doubling backoff), a bounded number of times. A query,
an extract and a comparison are never retried: each may spend privacy budget or release records, and
only the caller can decide whether asking again is worth it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from datapoort_client._errors import ConnectionFailed, error_code, retry_after

RETRYABLE = frozenset({(503, "overloaded"), (429, "rate_limited")})
"""(status, code) of the refusals that say "the same request, a little later": nothing was done."""

sleep: Callable[[float], None] = time.sleep
"""How the client waits; tests replace it."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retries: int = 2
    """How many times an idempotent request is sent again (0: never)."""
    backoff: float = 0.2
    """Seconds before the first retry when the gateway names no wait; doubled for each next one."""
    max_wait: float = 10.0
    """The longest ``Retry-After`` honoured; a longer one is raised to the caller at once."""

    def wait_before(self, attempt: int, response: httpx.Response | None) -> float | None:
        """Seconds to wait before sending again after ``attempt`` (0-based) failed, or ``None``: do not."""
        if attempt >= self.retries:
            return None
        asked = retry_after(response) if response is not None else None
        wait = asked if asked is not None else self.backoff * 2**attempt
        return wait if wait <= self.max_wait else None


def send(
    client: httpx.Client, request: httpx.Request, policy: RetryPolicy, *, idempotent: bool, stream: bool = False
) -> httpx.Response:
    """Send ``request``, again while ``policy`` allows if it is ``idempotent``; the last answer is
    returned whatever its status (the caller raises on refusals). ``ConnectionFailed`` if none came."""
    attempt = 0
    while True:
        try:
            response = client.send(request, stream=stream)
        except httpx.TransportError as exc:
            wait = policy.wait_before(attempt, None) if idempotent else None
            if wait is None:
                detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                raise ConnectionFailed("connection_failed", f"no answer from the gateway ({detail})") from exc
        else:
            wait = _retry_wait(response, policy, attempt) if idempotent else None
            if wait is None:
                return response
            response.close()
        sleep(wait)
        attempt += 1


def _retry_wait(response: httpx.Response, policy: RetryPolicy, attempt: int) -> float | None:
    if response.status_code not in {status for status, _ in RETRYABLE}:
        return None
    response.read()  # a refusal's body is small; needed to tell a rate limit from an exhausted budget
    code, _ = error_code(response)
    if (response.status_code, code) not in RETRYABLE:
        return None
    return policy.wait_before(attempt, response)
