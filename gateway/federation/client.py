"""Asking peer gateways, in parallel, with nothing a peer does able to make this gateway fail, hang or spend.

Each peer gets the caller's question as an ordinary ``POST /v1/query``, with the key it issued to this
gemeente and the caller's W3C ``traceparent`` (so both audit logs share one trace id). What comes back is
read within a time limit and a size limit, without following redirects, and kept only if it has the shape
of an answer (``PeerAnswer``); anything else names the peer and why, as an outcome, never as an error.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

Status = Literal["answered", "refused", "unavailable", "unreachable", "timed_out", "invalid_answer"]
Scalar = str | int | float | bool | None
MAX_PEERS = 16


class _Privacy(BaseModel):
    model_config = ConfigDict(extra="allow")
    epsilon_spent: Annotated[float, Field(ge=0, allow_inf_nan=False)]


class PeerAnswer(BaseModel):
    """The part of a peer's answer that is passed on; everything else it sends is dropped."""

    model_config = ConfigDict(extra="ignore")
    columns: Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=100)]
    rows: Annotated[list[Annotated[list[Scalar], Field(max_length=100)]], Field(max_length=10_000)]
    privacy: _Privacy
    request_id: Annotated[str, Field(max_length=64)]


@dataclass(frozen=True, slots=True)
class PeerTarget:
    name: str
    gemeente: str
    url: str
    verify: bool | str
    """``True`` (the system's CAs), a CA bundle's path, or ``False`` for plain HTTP to this host."""
    credential: str


@dataclass(slots=True)
class PeerOutcome:
    name: str
    gemeente: str
    status: Status
    detail: str | None = None
    error: str | None = None
    """The peer's own error code, for a refusal."""
    http_status: int | None = None
    request_id: str | None = None
    answer: PeerAnswer | None = None
    elapsed_ms: float = 0.0

    def summary(self) -> dict[str, Any]:
        """What the caller's audit event keeps of it: who, how it ended, under which request id."""
        return {
            "peer": self.name,
            "status": self.status,
            "error": self.error,
            "request_id": self.request_id,
            "epsilon_spent": self.answer.privacy.epsilon_spent if self.answer is not None else None,
        }


def ask(target: PeerTarget, body: dict[str, Any], *, traceparent: str, timeout: float, max_bytes: int) -> PeerOutcome:
    started = time.monotonic()
    try:
        outcome = _ask(target, body, traceparent=traceparent, timeout=timeout, max_bytes=max_bytes, started=started)
    except Exception as exc:  # whatever a peer does, it is that peer's outcome, never the caller's failure
        outcome = PeerOutcome(target.name, target.gemeente, "invalid_answer", f"failed ({type(exc).__name__})")
    outcome.elapsed_ms = (time.monotonic() - started) * 1000
    return outcome


def _ask(
    target: PeerTarget, body: dict[str, Any], *, traceparent: str, timeout: float, max_bytes: int, started: float
) -> PeerOutcome:
    def ended(status: Status, detail: str, **more: Any) -> PeerOutcome:
        return PeerOutcome(target.name, target.gemeente, status, detail, **more)

    headers = {"Authorization": f"Bearer {target.credential}", "traceparent": traceparent}
    try:
        with (
            httpx.Client(verify=target.verify, timeout=timeout, follow_redirects=False, trust_env=False) as client,
            client.stream("POST", f"{target.url}/v1/query", json=body, headers=headers) as response,
        ):
            content = bytearray()
            for chunk in response.iter_bytes():
                content += chunk
                if len(content) > max_bytes:
                    return ended("invalid_answer", f"the answer is larger than {max_bytes} bytes")
                if time.monotonic() - started > timeout:  # a peer dripping bytes is still too slow
                    return ended("timed_out", f"no whole answer within {timeout:g} s")
            status = response.status_code
    except httpx.TimeoutException:
        return ended("timed_out", f"no answer within {timeout:g} s")
    except (httpx.TransportError, httpx.InvalidURL) as exc:
        return ended("unreachable", f"could not be reached ({type(exc).__name__.lower()})")
    try:
        document = json.loads(bytes(content))
    except ValueError:
        document = None
    if 300 <= status < 400:
        return ended(
            "invalid_answer", f"answered with a redirect ({status}); redirects are not followed", http_status=status
        )
    if status >= 400:
        code = document.get("error") if isinstance(document, dict) else None
        request_id = document.get("request_id") if isinstance(document, dict) else None
        kind: Status = "refused" if status < 500 else "unavailable"
        return ended(
            kind,
            f"the peer answered {status}",
            http_status=status,
            error=code[:64] if isinstance(code, str) else None,
            request_id=request_id[:64] if isinstance(request_id, str) else None,
        )
    try:
        answer = PeerAnswer.model_validate(document)
    except ValidationError:
        return ended("invalid_answer", "the answer does not have the shape of a query answer", http_status=status)
    return PeerOutcome(
        target.name, target.gemeente, "answered", http_status=status, request_id=answer.request_id, answer=answer
    )


def ask_all(
    targets: list[PeerTarget], body: dict[str, Any], *, traceparent: str, timeout: float, max_bytes: int
) -> list[PeerOutcome]:
    """Every peer at once; each within its own time limit, so the slowest bounds the wait."""
    if not targets:
        return []
    with ThreadPoolExecutor(max_workers=min(len(targets), MAX_PEERS), thread_name_prefix="datapoort-peer") as pool:
        futures = [
            pool.submit(ask, target, body, traceparent=traceparent, timeout=timeout, max_bytes=max_bytes)
            for target in targets
        ]
        return [future.result() for future in futures]
