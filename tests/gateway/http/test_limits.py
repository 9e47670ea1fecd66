"""Bounded work per request: the body is limited before it is read, a plan's size and complexity are
bounded, and an event keeps a bounded query text (with the SHA-256 of the whole)."""

from __future__ import annotations

import hashlib
import json
import time

from gateway.audit_trail import MAX_QUERY_CHARS
from tests.gateway.conftest import Api

PURPOSE = "beleidsinformatie"


def _plan(lists: int, values: int) -> dict[str, object]:
    return {
        "dataset": "residents",
        "aggregates": [{"function": "count"}],
        "where": {"or": [{"column": "wijk", "op": "in", "values": [f"W{i}" for i in range(values)]}] * lists},
    }


def test_a_body_over_the_limit_is_refused_before_it_is_read_and_audited(api: Api) -> None:
    """A 50 MB body was read whole before it was refused."""
    limit = api.settings.max_body_bytes
    headers = {"Authorization": f"Bearer {api.keys['analyst']}", "Content-Type": "application/json"}
    response = api.client.post("/v1/query", content=b"x" * (limit + 1), headers=headers)
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"
    event = api.events()[-1]
    assert (event.decision, event.reason) == ("deny", "body_too_large")
    assert event.request_id == response.headers["x-request-id"]


def test_a_chunked_body_over_the_limit_is_refused_too(api: Api) -> None:
    limit = api.settings.max_body_bytes

    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(limit // 65_536 + 2):
            yield b" " * 65_536

    headers = {"Authorization": f"Bearer {api.keys['analyst']}", "Content-Type": "application/json"}
    response = api.client.post("/v1/query", content=chunks(), headers=headers)
    assert response.status_code == 413
    audited = [event for event in api.events() if event.request_id == response.headers["x-request-id"]]
    assert [(event.decision, event.reason) for event in audited] == [("deny", "body_too_large")]


def test_a_plan_with_too_many_values_is_refused_quickly(api: Api) -> None:
    """201 IN lists of 1,000 values held the SQLite write lock 4.4 s and 650 MB of memory per estimate."""
    body = {"purpose": PURPOSE, "plan": _plan(lists=2, values=1_000), "epsilon": 0.1}
    assert len(json.dumps(body)) < api.settings.max_body_bytes
    start = time.monotonic()
    response = api.client.post(
        "/v1/query/estimate", json=body, headers={"Authorization": f"Bearer {api.keys['analyst']}"}
    )
    assert time.monotonic() - start < 2.0
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_query"
    assert "2000 values; at most 2000" not in response.json()["detail"]
    assert "at most 2000" in response.json()["detail"]


def test_an_event_keeps_a_bounded_query_text_with_the_hash_of_the_whole(api: Api) -> None:
    plan = _plan(lists=1, values=1_000)
    response = api.client.post(
        "/v1/query/estimate",
        json={"purpose": PURPOSE, "plan": plan, "epsilon": 0.1},
        headers={"Authorization": f"Bearer {api.keys['analyst']}"},
    )
    assert response.status_code == 200, response.text
    event = api.events()[-1]
    assert event.query is not None
    assert len(event.query) < MAX_QUERY_CHARS + 200
    whole, _, tail = event.query.partition(" ... [")
    assert len(whole) == MAX_QUERY_CHARS
    digest = tail.split("sha256 ")[1].rstrip("]")
    assert len(digest) == 64
    assert digest != hashlib.sha256(whole.encode()).hexdigest()  # of the whole text, not of what is kept


def test_a_caller_over_its_rate_is_refused_with_retry_after_and_others_are_not(api: Api) -> None:
    api.client.app.state.rate_limiter.rate = 0.01  # type: ignore[attr-defined]  # no refill during the test
    burst = int(api.settings.rate_limit_burst)
    headers = {"Authorization": f"Bearer {api.keys['partner']}"}
    statuses = [api.client.get("/v1/datasets", headers=headers).status_code for _ in range(burst + 5)]
    assert statuses[:burst] == [200] * burst
    assert 429 in statuses[burst:]
    refused = api.client.get("/v1/datasets", headers=headers)
    assert refused.status_code == 429
    assert refused.json()["error"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    event = api.events()[-1]
    assert (event.decision, event.reason, event.principal_id) == ("deny", "rate_limited", "zorgpartner-de-brug")
    other = api.client.get("/v1/datasets", headers={"Authorization": f"Bearer {api.keys['analyst']}"})
    assert other.status_code == 200


def test_the_buckets_are_shared_by_the_processes_of_one_postgresql_state_database(api: Api) -> None:
    from fastapi.testclient import TestClient

    from gateway.http.app import create_app

    if not api.settings.state_database_url.startswith("postgresql"):
        assert api.client.app.state.rate_limiter.engine is None  # type: ignore[attr-defined]
        return
    api.client.app.state.rate_limiter.rate = 0.01  # type: ignore[attr-defined]
    headers = {"Authorization": f"Bearer {api.keys['partner']}"}
    burst = int(api.settings.rate_limit_burst)
    for _ in range(burst):
        assert api.client.get("/v1/datasets", headers=headers).status_code == 200
    with TestClient(create_app(api.settings)) as second:  # another process on the same state database
        second.app.state.rate_limiter.rate = 0.01  # type: ignore[attr-defined]
        assert second.get("/v1/datasets", headers=headers).status_code == 429
