"""Median latency of the demo query through the whole gateway, beside raw DuckDB on the same data.

Builds a Voorbeeldstad in a temporary directory, serves it with uvicorn on a loopback port, and times
``POST /v1/query`` (authentication, casbin, budget, pushed-down SQL with contribution bounding, OpenDP
noise, audit event, commit) against the bare DuckDB group-by it wraps, in the same run.

    python benchmarks/demo_query.py [--quick] [--residents N] [--requests N] [--json PATH]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
import httpx
from _harness import free_port, serving, write_figures  # benchmarks/ is on sys.path when run as a script

from gateway.demo import generator, setup
from gateway.settings import Settings
from gateway.store.database import create_state_engine, session_factory
from gateway.store.migrate import upgrade

DEMO_SQL = "SELECT wijk, COUNT(*) FROM residents GROUP BY wijk"


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _time_ms(function: Any, repeats: int) -> list[float]:
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        timings.append((time.perf_counter() - start) * 1000)
    return timings


def run(residents: int, requests: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as temporary:
        data_dir = Path(temporary)
        build_start = time.perf_counter()
        generator.generate(data_dir, residents=residents)
        build_s = time.perf_counter() - build_start
        settings = Settings(_env_file=None, data_dir=data_dir, port=free_port(), max_query_epsilon=2.0)  # type: ignore[call-arg]
        engine = create_state_engine(settings.state_database_url)
        upgrade(engine)
        keys = setup.provision(session_factory(engine), data_dir, instance="bench")
        engine.dispose()

        with serving(settings) as base_url:
            # The demo grant allows 10 epsilon a month; a tiny epsilon per request keeps the budget from
            # running out during the benchmark without changing the work done.
            body = {"purpose": "beleidsinformatie", "sql": DEMO_SQL, "epsilon": 10.0 / (requests + 20)}
            with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {keys['analyst']}"}) as client:

                def ask() -> None:
                    response = client.post("/v1/query", json=body)
                    response.raise_for_status()

                _time_ms(ask, 5)  # warm-up: first DuckDB scan, casbin load, connection pool
                gateway_ms = _time_ms(ask, requests)

            with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {keys['partner']}"}) as denied:

                def refuse() -> None:
                    refused = denied.post("/v1/query", json={"purpose": "beleidsinformatie", "sql": DEMO_SQL})
                    if refused.status_code != 403:
                        raise RuntimeError("the partner should be refused")

                denied_ms = _time_ms(refuse, max(10, requests // 4))

        connection = duckdb.connect()
        raw_sql = f"SELECT wijk, COUNT(*) FROM read_parquet('{data_dir / 'residents.parquet'}') GROUP BY wijk"  # noqa: S608
        connection.execute(raw_sql).fetchall()
        raw_ms = _time_ms(lambda: connection.execute(raw_sql).fetchall(), requests)

    gateway_median = statistics.median(gateway_ms)
    raw_median = statistics.median(raw_ms)
    return {
        "benchmark": "demo_query",
        "residents": residents,
        "requests": requests,
        "demo_build_ms": build_s * 1000,
        "gateway_median_ms": gateway_median,
        "gateway_p95_ms": _percentile(gateway_ms, 0.95),
        "denied_median_ms": statistics.median(denied_ms),
        "raw_duckdb_median_ms": raw_median,
        "gateway_over_raw_duckdb_ratio": gateway_median / raw_median,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20,000 residents and 40 requests (well under a minute)")
    parser.add_argument("--residents", type=int, default=None, help="default 100,000 (the demo size)")
    parser.add_argument("--requests", type=int, default=None, help="default 200")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as a flat JSON object")
    arguments = parser.parse_args()
    residents = arguments.residents or (20_000 if arguments.quick else 100_000)
    requests = arguments.requests or (40 if arguments.quick else 200)

    figures = run(residents, requests)
    print(f"demo query: {DEMO_SQL!r} on {residents:,} residents, {requests} requests")
    print(f"{'figure':<34}{'value':>12}")
    for name, value in figures.items():
        if name == "benchmark":
            continue
        print(f"{name:<34}{value:>12.2f}" if isinstance(value, float) else f"{name:<34}{value:>12,}")
    if arguments.json is not None:
        write_figures(arguments.json, figures)


if __name__ == "__main__":
    main()
