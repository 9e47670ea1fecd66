"""A burst is answered, not stalled, and every answer is audited.

Before: with more than about 40 concurrent requests, the authentication dependency began each request's
transaction (on SQLite: took the write lock) on one thread and then waited for another thread to run the
route; every thread ended up waiting, and nearly all requests failed after a minute, 40 of 100 without
an audit event. Here 100 requests arrive at once at a gateway with 4 request threads."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import select

from audit.models import AuditEvent
from gateway.http.app import create_app
from gateway.settings import Settings
from gateway.store.database import create_state_engine, session_factory
from tests.gateway.conftest import DEMO_SQL, provision_state

BURST = 100


@pytest.fixture
def served(tmp_path: Path, demo_dir: Path, state_db_url: str) -> Iterator[tuple[str, dict[str, str], Settings]]:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    settings = Settings(
        data_dir=tmp_path,
        database_url=state_db_url,
        catalog=demo_dir / "catalog.yaml",
        instance="burst",
        worker_threads=4,
        queue_seconds=0.3,
        rate_limit_burst=1_000,  # this test is about overload, not about one caller's rate
        port=port,
        _env_file=None,  # type: ignore[call-arg]
    )
    keys = provision_state(state_db_url, tmp_path, "burst")
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline, "the gateway did not start"
        assert thread.is_alive(), "the gateway did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", keys, settings
    finally:
        server.should_exit = True
        thread.join(timeout=30)  # the shutdown flushes the overload ledger


def _ask(client: httpx.Client, key: str, body: dict[str, Any]) -> tuple[int, str, float, str | None, str]:
    start = time.monotonic()
    response = client.post("/v1/query", json=body, headers={"Authorization": f"Bearer {key}"})
    code = response.json().get("error", "ok") if response.status_code != 200 else "ok"
    return (
        response.status_code,
        response.headers["x-request-id"],
        time.monotonic() - start,
        response.headers.get("retry-after"),
        code,
    )


def test_a_burst_is_answered_quickly_and_every_answer_is_audited(
    served: tuple[str, dict[str, str], Settings], tmp_path: Path
) -> None:
    url, keys, settings = served
    bodies = [
        {"purpose": "beleidsinformatie", "sql": DEMO_SQL, "epsilon": 0.01}
        if index % 2
        else {"purpose": "beleidsinformatie", "sql": DEMO_SQL}  # the partner: refused by policy
        for index in range(BURST)
    ]
    who = [keys["analyst"] if index % 2 else keys["partner"] for index in range(BURST)]
    barrier = threading.Barrier(BURST)
    clients = [httpx.Client(base_url=url, timeout=60) for _ in range(BURST)]  # made before, not in the burst

    def fire(index: int) -> tuple[int, str, float, str | None, str]:
        barrier.wait()
        return _ask(clients[index], who[index], bodies[index])

    started = time.monotonic()
    with ThreadPoolExecutor(BURST) as pool:
        answers = list(pool.map(fire, range(BURST)))
    elapsed = time.monotonic() - started
    for client in clients:
        client.close()

    statuses = {status for status, *_ in answers}
    assert statuses <= {200, 403, 503}, statuses
    assert elapsed < 30, elapsed  # before: 60 s and more
    overloaded = [answer for answer in answers if answer[0] == 503]
    assert all(code == "overloaded" and retry == "1" for _, _, _, retry, code in overloaded), overloaded
    slowest = max((seconds for _, _, seconds, _, _ in overloaded), default=0.0)
    assert slowest < 2.0, slowest  # refused within the queue deadline
    assert any(status == 200 for status, *_ in answers)
    assert any(status == 403 for status, *_ in answers)

    time.sleep(settings.queue_seconds + 1.5)  # the overload ledger writes its summary every second
    engine = create_state_engine(settings.state_database_url)
    with session_factory(engine)() as session:
        events = list(session.scalars(select(AuditEvent)))
    engine.dispose()
    audited = {event.request_id for event in events}
    for event in events:
        if event.action == "overload":
            audited |= {entry["request_id"] for entry in json.loads(event.detail or "{}")["requests"]}
    missing = [(status, request_id) for status, request_id, *_ in answers if request_id not in audited]
    assert missing == []


def test_a_long_burst_of_overload_refusals_is_written_in_events_that_keep_every_request_id(
    tmp_path: Path, state_engine: Any
) -> None:
    from gateway.http.admission import MAX_IDS_PER_EVENT, OverloadLedger

    ledger = OverloadLedger(sessions=session_factory(state_engine), instance="burst")
    ids = [f"{index:032x}" for index in range(5 * MAX_IDS_PER_EVENT + 7)]
    for request_id in ids:
        ledger.record(request_id, "/v1/query/estimate", "127.0.0.1")
    assert ledger.flush() == len(ids)
    with session_factory(state_engine)() as session:
        details = list(session.scalars(select(AuditEvent.detail).where(AuditEvent.action == "overload")))
    assert len(details) == 6
    kept = [entry["request_id"] for detail in details for entry in json.loads(detail or "{}")["requests"]]
    assert kept == ids
