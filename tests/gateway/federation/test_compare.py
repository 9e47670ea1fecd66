"""Three gemeenten on three real gateway processes (and some peers that misbehave): one comparison, each
gemeente answering under its own policies, budget and audit log, on one trace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select

from audit.models import AuditEvent
from gateway.demo import gemeenten as gemeenten_demo
from gateway.keys.peer_credentials import credential_path
from gateway.store.database import session_factory
from policies.models import BudgetSpend

SQL = "SELECT wijk, COUNT(*) AS n FROM residents GROUP BY wijk"
PURPOSE = "beleidsinformatie"


def _port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _demo(directory: Path, residents: int) -> dict[str, str]:
    subprocess.run(
        [sys.executable, "-m", "gateway.cli", "demo", "--data-dir", str(directory), "--residents", str(residents),
         "--no-serve"],
        check=True, stdout=subprocess.DEVNULL, env=_env(directory),
    )  # fmt: skip
    keys: dict[str, str] = json.loads((directory / "demo-keys.json").read_text())
    return keys


def _env(directory: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("DATAPOORT_")}
    return {
        **env,
        "DATAPOORT_DATA_DIR": str(directory),
        "DATAPOORT_ALLOW_PLAIN_LOOPBACK_PEERS": "true",
        "DATAPOORT_PEER_TIMEOUT_SECONDS": "3",
        "DATAPOORT_PEER_MAX_ANSWER_BYTES": "200000",
    }


def _sessions(directory: Path) -> Any:
    return session_factory(create_engine(f"sqlite:///{directory / 'state.db'}"))


def _admit(directory: Path, organisation: str, *, granted: bool) -> str:
    """On a peer: the other gemeente as an ordinary principal of its own organisation; a key for it."""
    return gemeenten_demo.admit(_sessions(directory), organisation, grants=granted)


def _register(directory: Path, name: str, gemeente: str, url: str, secret: str) -> None:
    gemeenten_demo.register(_sessions(directory), directory, name=name, gemeente=gemeente, url=url, secret=secret)


class _Evil(BaseHTTPRequestHandler):
    """A peer that misbehaves as its path says: garbage, too much, a redirect, or too slow."""

    behaviour = "garbage"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        kind = self.server.behaviour  # type: ignore[attr-defined]
        if kind == "redirect":
            self.send_response(307)
            self.send_header("Location", "http://127.0.0.1:1/v1/query")
            self.end_headers()
            return
        if kind == "slow":
            time.sleep(6)
        body = {
            "garbage": b"\x00not json{{",
            "huge": b'{"columns": ["wijk"], "rows": [' + b'["x"],' * 100_000 + b'["x"]]}',
            "shape": json.dumps({"columns": "wijk", "rows": 5, "privacy": {"epsilon_spent": -1}}).encode(),
            "slow": b"{}",
        }[kind]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def _evil(behaviour: str) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Evil)
    server.behaviour = behaviour  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _serve(directory: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--data-dir", str(directory), "--port", str(port)],
        env=_env(directory), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _wait(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not start")


@pytest.fixture(scope="module")
def gemeenten(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("gemeenten")
    sizes = {"a": 3000, "b": 5000, "c": 2000}
    dirs = {name: root / name for name in sizes}
    keys = {name: _demo(dirs[name], size) for name, size in sizes.items()}
    ports = {name: _port() for name in sizes}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    _register(dirs["a"], "b", "Gemeente B", urls["b"], _admit(dirs["b"], "gemeente-a", granted=True))
    _register(dirs["a"], "c", "Gemeente C", urls["c"], _admit(dirs["c"], "gemeente-a", granted=True))
    _register(dirs["a"], "c-zonder-grant", "Gemeente C", urls["c"], _admit(dirs["c"], "gemeente-x", granted=False))
    _register(dirs["a"], "uit", "Gemeente Uit", f"http://127.0.0.1:{_port()}", "dpk_nothing")
    servers = {behaviour: _evil(behaviour) for behaviour in ("garbage", "huge", "shape", "redirect", "slow")}
    for behaviour, server in servers.items():
        _register(dirs["a"], f"kwaad-{behaviour}", "Kwaadstad", f"http://127.0.0.1:{server.server_port}", "x")
    children = {name: _serve(dirs[name], ports[name]) for name in sizes}
    try:
        for url in urls.values():
            _wait(url)
        yield {"dirs": dirs, "urls": urls, "keys": keys}
    finally:
        for child in children.values():
            child.terminate()
        for child in children.values():
            child.wait(timeout=30)
        for server in servers.values():
            server.shutdown()
            server.server_close()


def _compare(gemeenten: dict[str, Any], peers_asked: list[str] | None = None, **extra: Any) -> httpx.Response:
    body: dict[str, Any] = {"purpose": PURPOSE, "sql": SQL, "epsilon": 0.5, **extra}
    if peers_asked is not None:
        body["peers"] = peers_asked
    return httpx.post(
        f"{gemeenten['urls']['a']}/v1/compare",
        json=body,
        headers={"Authorization": f"Bearer {gemeenten['keys']['a']['analyst']}",
                 "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
        timeout=60,
    )  # fmt: skip


def test_three_gemeenten_answer_each_under_its_own_budget_on_one_trace(gemeenten: dict[str, Any]) -> None:
    response = _compare(gemeenten, ["b", "c"])
    assert response.status_code == 200, response.text
    body = response.json()
    local, b, c = body["gemeenten"]
    assert [entry["status"] for entry in (local, b, c)] == ["answered"] * 3
    assert [b["gemeente"], c["gemeente"]] == ["Gemeente B", "Gemeente C"]
    for entry in (local, b, c):
        assert entry["columns"] == ["wijk", "n"]
        assert entry["epsilon_spent"] == pytest.approx(0.5)
    # The populations differ (3,000, 5,000, 2,000): each answer is its own gemeente's.
    totals = [sum(row[1] for row in entry["rows"]) for entry in (local, b, c)]
    assert totals[1] > totals[0] > totals[2]
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    assert body["trace_id"] == trace
    dirs = gemeenten["dirs"]
    for name, entry in (("b", b), ("c", c)):
        with _sessions(dirs[name])() as session:
            spent = session.scalar(
                select(func.sum(BudgetSpend.epsilon)).where(BudgetSpend.principal_id == "gemeente-a-vergelijking")
            )
            event = session.scalars(select(AuditEvent).where(AuditEvent.request_id == entry["request_id"])).one()
        assert spent == pytest.approx(0.5)  # the peer's own ledger, under the peer's own grant
        assert (event.traceparent or "").split("-")[1] == trace
        assert event.principal_id == "gemeente-a-vergelijking"
    with _sessions(dirs["a"])() as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.request_id == body["request_id"])).one()
    assert (event.traceparent or "").split("-")[1] == trace
    asked = json.loads(event.detail or "{}")["peers"]
    assert [(peer["peer"], peer["status"], peer["request_id"]) for peer in asked] == [
        ("b", "answered", b["request_id"]),
        ("c", "answered", c["request_id"]),
    ]
    for directory in dirs.values():
        verified = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "audit", "verify", "--data-dir", str(directory)],
            env=_env(directory), capture_output=True, text=True,
        )  # fmt: skip
        assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_refusing_a_down_and_misbehaving_peers_are_named_not_fatal(gemeenten: dict[str, Any]) -> None:
    started = time.monotonic()
    response = _compare(gemeenten)  # every registered peer
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    entries = {entry["peer"]: entry for entry in response.json()["gemeenten"]}
    assert entries[None]["status"] == entries["b"]["status"] == entries["c"]["status"] == "answered"
    assert (entries["c-zonder-grant"]["status"], entries["c-zonder-grant"]["error"]) == ("refused", "policy_denied")
    assert entries["uit"]["status"] == "unreachable"
    assert entries["kwaad-garbage"]["status"] == "invalid_answer"
    assert entries["kwaad-shape"]["status"] == "invalid_answer"
    assert entries["kwaad-huge"]["status"] == "invalid_answer"
    assert entries["kwaad-redirect"]["status"] == "invalid_answer"
    assert entries["kwaad-slow"]["status"] == "timed_out"
    assert elapsed < 3 + 5  # the slowest peer is cut off at its time limit
    for name in ("c-zonder-grant", "uit", "kwaad-garbage", "kwaad-huge", "kwaad-shape", "kwaad-redirect", "kwaad-slow"):
        assert "rows" not in entries[name]
    # The refusing peer spent nothing under the principal it refused.
    with _sessions(gemeenten["dirs"]["c"])() as session:
        spent = session.scalar(
            select(func.count()).select_from(BudgetSpend).where(BudgetSpend.principal_id == "gemeente-x-vergelijking")
        )
    assert spent == 0


def test_a_caller_who_may_not_ask_here_asks_no_one(gemeenten: dict[str, Any]) -> None:
    before = _peer_events(gemeenten["dirs"]["b"])
    response = httpx.post(
        f"{gemeenten['urls']['a']}/v1/compare",
        json={"purpose": PURPOSE, "sql": SQL, "epsilon": 0.5, "peers": ["b"]},
        headers={"Authorization": f"Bearer {gemeenten['keys']['a']['partner']}"},
        timeout=60,
    )
    assert response.status_code == 403, response.text
    assert _peer_events(gemeenten["dirs"]["b"]) == before
    unknown = _compare(gemeenten, ["nergens"])
    assert (unknown.status_code, unknown.json()["error"]) == (400, "invalid_query")


def _peer_events(directory: Path) -> int:
    with _sessions(directory)() as session:
        return int(session.scalar(select(func.count()).select_from(AuditEvent)) or 0)


def test_a_peer_credential_readable_by_others_is_refused(gemeenten: dict[str, Any]) -> None:
    path = credential_path(gemeenten["dirs"]["a"], "b")
    os.chmod(path, 0o644)
    try:
        response = _compare(gemeenten, ["b"])
    finally:
        os.chmod(path, 0o600)
    assert response.status_code == 503, response.text
    assert "readable by others" in response.json()["detail"]
