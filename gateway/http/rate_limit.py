"""A token bucket per caller (API key, or principal for an identity-provider token): ``rate`` requests a
second on average, bursts of ``burst``. Over it, 429 ``rate_limited`` with ``Retry-After``, audited like
every refusal. On PostgreSQL the buckets live in the state database, so every process of one gateway
shares them (one short statement per request); on SQLite, which serves one process, in memory.

Refused requests take no token: a caller over the limit is not kept there by its own retries."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy import Engine, text

from gateway.exceptions import GatewayError

_ENSURE = text(
    "INSERT INTO rate_bucket (caller, tokens, updated_at) VALUES (:caller, :burst, clock_timestamp()) "
    "ON CONFLICT (caller) DO NOTHING"
)
_READ = text(
    "SELECT tokens, extract(epoch FROM clock_timestamp() - updated_at) FROM rate_bucket "
    "WHERE caller = :caller FOR UPDATE"
)
_WRITE = text("UPDATE rate_bucket SET tokens = :tokens, updated_at = clock_timestamp() WHERE caller = :caller")


class RateLimited(GatewayError):
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(slots=True)
class RateLimiter:
    rate: float
    burst: float
    engine: Engine | None = None
    """A PostgreSQL state database to keep the buckets in; ``None``: in this process."""
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, caller: str) -> None:
        """Take one token for ``caller`` or raise ``RateLimited``."""
        left = self._take_shared(self.engine, caller) if self.engine is not None else self._take_here(caller)
        if left is not None:
            wait = max(1, math.ceil((1 - left) / self.rate))
            raise RateLimited(f"more than {self.rate:g} requests a second; try again in {wait} s", wait)

    def _take_here(self, caller: str) -> float | None:
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.get(caller, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            if tokens >= 1:
                self._buckets[caller] = (tokens - 1, now)
                return None
            self._buckets[caller] = (tokens, now)
            return tokens

    def _take_shared(self, engine: Engine, caller: str) -> float | None:
        """In a short transaction of its own that locks the caller's bucket row, across processes."""
        with engine.begin() as connection:
            connection.execute(_ENSURE, {"caller": caller, "burst": self.burst})
            tokens, elapsed = connection.execute(_READ, {"caller": caller}).one()
            refilled = min(self.burst, float(tokens) + max(float(elapsed), 0.0) * self.rate)
            taken = refilled >= 1
            connection.execute(_WRITE, {"caller": caller, "tokens": refilled - 1 if taken else refilled})
        return None if taken else refilled
