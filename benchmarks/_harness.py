# ruff: noqa: E402 - the path fix below must run before the project's packages are imported
"""What the benchmarks share: serving a gateway on a free loopback port, in this process, for a while.

Imported first by every benchmark: run as a script, a benchmark has this folder first on ``sys.path``,
where ``audit.py`` (the audit benchmark) would shadow the ``audit`` package. The folder moves to the end.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE] + [str(_HERE)]

import json
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from gateway.http.app import create_app
from gateway.settings import Settings


def interleaved_medians(functions: list[Callable[[], object]], runs: int) -> list[float]:
    """Median times (ms) of several functions, run in turn, so that a machine busy with something else
    slows each of them alike and their ratio stays fair."""
    for function in functions:
        function()  # warm: file metadata, plans, pages
    timings: list[list[float]] = [[] for _ in functions]
    for _ in range(runs):
        for index, function in enumerate(functions):
            start = time.perf_counter()
            function()
            timings[index].append((time.perf_counter() - start) * 1000)
    return [statistics.median(series) for series in timings]


def write_figures(path: Path, figures: dict[str, Any]) -> None:
    """The figures as one flat JSON object, so runs can be tracked over time (``--json PATH``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {path}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serving(settings: Settings) -> Iterator[str]:
    """Serve ``settings`` (its port) with uvicorn in a thread; yields the base URL, stops on exit."""
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=settings.port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the gateway did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
