"""Which calls the client sends again, and how long it waits: an ``httpx.MockTransport`` plays the
gateway (the documented ``transport=``), and the waits are recorded instead of slept."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from datapoort_client import (
    BudgetExhausted,
    ConnectionFailed,
    DatapoortError,
    Gateway,
    Overloaded,
    PolicyDenied,
    RateLimited,
    Unavailable,
    _retry,
)

SQL = "SELECT COUNT(*) FROM residents"
Handler = Callable[[httpx.Request], httpx.Response]


def _refusal(status: int, code: str, retry_after: str | None = None, **extra: Any) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    body = {"error": code, "detail": "refused", "request_id": "r" * 32, **extra}
    return httpx.Response(status, json=body, headers=headers)


ANSWERS: dict[str, Any] = {
    "/v1/budget": {"budgets": []},
    "/v1/datasets": {"datasets": [{"name": "residents"}]},
    "/v1/query/estimate": {"epsilon": 0.5, "budget": {"affordable": True}, "request_id": "e" * 32},
    "/v1/query": {"columns": ["count"], "rows": [[7]], "privacy": {"aggregates": {}}, "request_id": "q" * 32},
}


class Script:
    """Answers each request with the next of ``first`` (a response, or an exception to raise), then
    with the route's success; counts what was sent."""

    def __init__(self, *first: httpx.Response | Exception) -> None:
        self.first = list(first)
        self.sent: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request.url.path)
        if self.first:
            step = self.first.pop(0)
            if isinstance(step, Exception):
                raise step
            return step
        return httpx.Response(200, json=ANSWERS[request.url.path])


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    recorded: list[float] = []
    monkeypatch.setattr(_retry, "sleep", recorded.append)
    return recorded


@pytest.fixture
def connect() -> Iterator[Callable[..., Gateway]]:
    opened: list[Gateway] = []

    def make(script: Handler, **options: Any) -> Gateway:
        gateway = Gateway("http://gateway.test", "dpk_test", transport=httpx.MockTransport(script), **options)
        opened.append(gateway)
        return gateway

    yield make
    for gateway in opened:
        gateway.close()


def test_a_query_is_never_sent_again_after_overloaded(connect: Callable[..., Gateway], waits: list[float]) -> None:
    script = Script(_refusal(503, "overloaded", "1"))
    with pytest.raises(Overloaded) as refused:
        connect(script).query(SQL, purpose="p")
    assert script.sent == ["/v1/query"]
    assert waits == []
    assert refused.value.retry_after == 1.0
    assert refused.value.status == 503


def test_a_read_is_sent_again_after_overloaded(connect: Callable[..., Gateway], waits: list[float]) -> None:
    script = Script(_refusal(503, "overloaded", "1"))
    assert connect(script).budget().empty
    assert script.sent == ["/v1/budget", "/v1/budget"]
    assert waits == [1.0]  # the gateway's Retry-After


def test_rate_limited_waits_what_retry_after_says(connect: Callable[..., Gateway], waits: list[float]) -> None:
    script = Script(_refusal(429, "rate_limited", "3"), _refusal(429, "rate_limited", "2"))
    assert connect(script).datasets() == [{"name": "residents"}]
    assert waits == [3.0, 2.0]


def test_an_estimate_spends_nothing_so_it_is_retried(connect: Callable[..., Gateway], waits: list[float]) -> None:
    script = Script(_refusal(503, "overloaded"))
    assert connect(script).estimate(SQL, purpose="p")["epsilon"] == 0.5
    assert script.sent == ["/v1/query/estimate"] * 2
    assert waits == [0.2]  # no Retry-After: the backoff


def test_retries_are_bounded_with_a_doubling_backoff(connect: Callable[..., Gateway], waits: list[float]) -> None:
    script = Script(*[_refusal(503, "overloaded") for _ in range(10)])
    with pytest.raises(Overloaded):
        connect(script, retries=3, backoff=0.5).budget()
    assert len(script.sent) == 4
    assert waits == [0.5, 1.0, 2.0]
    with pytest.raises(Overloaded):
        connect(Script(_refusal(503, "overloaded")), retries=0).datasets()


def test_a_long_retry_after_is_raised_at_once(connect: Callable[..., Gateway], waits: list[float]) -> None:
    script = Script(_refusal(429, "rate_limited", "120"))
    with pytest.raises(RateLimited) as limited:
        connect(script).budget()
    assert (len(script.sent), waits, limited.value.retry_after) == (1, [], 120.0)


def test_an_exhausted_budget_or_a_denial_is_never_retried(connect: Callable[..., Gateway], waits: list[float]) -> None:
    script = Script(_refusal(429, "budget_exhausted", epsilon_remaining=0.25, epsilon_requested=0.5))
    with pytest.raises(BudgetExhausted) as exhausted:
        connect(script).estimate(SQL, purpose="p")
    assert (exhausted.value.epsilon_remaining, exhausted.value.epsilon_requested) == (0.25, 0.5)
    script = Script(_refusal(403, "policy_denied"))
    with pytest.raises(PolicyDenied):
        connect(script).budget()
    assert len(script.sent) == 1
    assert waits == []


def test_connection_errors_retry_reads_only(connect: Callable[..., Gateway], waits: list[float]) -> None:
    script = Script(httpx.ConnectError("refused"))
    assert connect(script).budget().empty
    assert script.sent == ["/v1/budget"] * 2
    script = Script(httpx.ConnectError("refused"))
    with pytest.raises(ConnectionFailed) as failed:
        connect(script).query(SQL, purpose="p")
    assert script.sent == ["/v1/query"]
    assert failed.value.status is None
    assert isinstance(failed.value, Unavailable)


def test_extracts_and_comparisons_are_never_retried(
    connect: Callable[..., Gateway], waits: list[float], tmp_path: Path
) -> None:
    script = Script(_refusal(503, "overloaded"), _refusal(503, "overloaded"))
    gateway = connect(script)
    with pytest.raises(Overloaded):
        gateway.extract("jeugdzorg", purpose="p", columns=["wijk"], path=tmp_path / "x.csv")
    with pytest.raises(Overloaded):
        gateway.compare(SQL, purpose="p")
    assert script.sent == ["/v1/extracts", "/v1/compare"]
    assert waits == []
    assert not (tmp_path / "x.csv").exists()


def test_an_unknown_code_or_a_foreign_body_falls_back_on_the_status(connect: Callable[..., Gateway]) -> None:
    with pytest.raises(PolicyDenied) as denied:
        connect(Script(_refusal(403, "some_new_reason"))).budget()
    assert denied.value.code == "some_new_reason"
    with pytest.raises(Unavailable) as proxy:
        connect(Script(httpx.Response(502, text="<html>Bad gateway</html>")), retries=0).query(SQL, purpose="p")
    assert proxy.value.code == "http_502"
    assert "Bad gateway" in str(proxy.value.detail)
    with pytest.raises(DatapoortError) as teapot:
        connect(Script(httpx.Response(418, text=""))).budget()
    assert type(teapot.value) is DatapoortError
    assert teapot.value.status == 418
