"""The analysts' client beside a bare httpx POST of the same query, through one served demo gateway.

Times, interleaved in one run: a bare ``httpx.Client.post`` of ``/v1/query`` with its JSON decoded;
``Gateway.query`` returning a pandas DataFrame with each value's bounds and the privacy report in
``attrs``; and the same with polars. Their difference is the client's own work (the request body, the
retry rule, the error check, the frame and its intervals); that work alone, on a captured answer with
no HTTP, is timed too. There is no target: the figures say what the convenience costs.

    python benchmarks/client_overhead.py [--quick] [--residents N] [--runs N] [--json PATH]
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from _harness import free_port, interleaved_medians, serving, write_figures  # benchmarks/ is first on sys.path
from datapoort_client import Gateway
from datapoort_client._frames import released_columns, to_pandas

from gateway.demo import generator, setup
from gateway.settings import Settings
from gateway.store.database import create_state_engine, session_factory
from gateway.store.migrate import upgrade

SQL = "SELECT wijk, COUNT(*) AS n, AVG(income) AS gem FROM residents GROUP BY wijk"
PURPOSE = "beleidsinformatie"


def _demo(data_dir: Path, residents: int) -> dict[str, str]:
    generator.generate(data_dir, residents=residents)
    engine = create_state_engine(f"sqlite:///{data_dir / 'state.db'}")
    upgrade(engine)
    keys = setup.provision(session_factory(engine), data_dir, instance="bench")
    engine.dispose()
    return keys


def run(residents: int, runs: int) -> dict[str, Any]:
    figures: dict[str, Any] = {"benchmark": "client_overhead", "residents": residents, "runs": runs}
    with tempfile.TemporaryDirectory() as temporary:
        data_dir = Path(temporary)
        keys = _demo(data_dir, residents)
        # The rate limit is lifted: three callers take turns as fast as they can.
        settings = Settings(
            _env_file=None, data_dir=data_dir, port=free_port(), rate_limit_per_second=10_000, rate_limit_burst=10_000
        )
        # The demo grant allows 10 epsilon a month: every request spends a share small enough for all.
        epsilon = 9.0 / (3 * (runs + 2))
        body = {"purpose": PURPOSE, "sql": SQL, "epsilon": epsilon}
        headers = {"Authorization": f"Bearer {keys['analyst']}"}
        with (
            serving(settings) as url,
            httpx.Client(base_url=url, headers=headers) as bare,
            Gateway(url, keys["analyst"]) as gateway,
        ):

            def post() -> object:
                response = bare.post("/v1/query", json=body)
                response.raise_for_status()
                return response.json()

            answer: Any = post()
            calls: list[Callable[[], object]] = [
                post,
                lambda: gateway.query(SQL, purpose=PURPOSE, epsilon=epsilon),
                lambda: gateway.query(SQL, purpose=PURPOSE, epsilon=epsilon, backend="polars"),
            ]
            bare_ms, pandas_ms, polars_ms = interleaved_medians(calls, runs)

        def frame_only() -> object:
            data, bounds = released_columns(answer["columns"], answer["rows"], answer["privacy"]["aggregates"])
            return to_pandas(data, bounds)

        (frame_ms,) = interleaved_medians([frame_only], runs)
    figures.update(
        bare_httpx_ms=bare_ms,
        client_pandas_ms=pandas_ms,
        client_polars_ms=polars_ms,
        client_pandas_overhead_ms=pandas_ms - bare_ms,
        client_polars_overhead_ms=polars_ms - bare_ms,
        frame_only_pandas_ms=frame_ms,
    )
    return figures


def _table(figures: dict[str, Any]) -> str:
    bare = figures["bare_httpx_ms"]
    rows = [
        ("bare httpx POST + .json()", bare),
        ("Gateway.query -> pandas", figures["client_pandas_ms"]),
        ("Gateway.query -> polars", figures["client_polars_ms"]),
    ]
    lines = [
        f"The client over a bare httpx POST of /v1/query, {figures['residents']:,} residents, "
        f"median of {figures['runs']} interleaved runs (ms)",
        f"{'call':<30}{'median':>9}{'over bare':>11}",
    ]
    lines += [f"{name:<30}{ms:>9.2f}{ms - bare:>+11.2f}" for name, ms in rows]
    lines.append(f"{'the frame alone (no HTTP)':<30}{figures['frame_only_pandas_ms']:>9.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5,000 residents and 20 runs (seconds)")
    parser.add_argument("--residents", type=int, default=None, help="default 20,000")
    parser.add_argument("--runs", type=int, default=None, help="default 100")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as a flat JSON object")
    arguments = parser.parse_args()
    residents = arguments.residents or (5_000 if arguments.quick else 20_000)
    runs = arguments.runs or (20 if arguments.quick else 100)
    figures = run(residents, runs)
    print(_table(figures))
    if arguments.json is not None:
        write_figures(arguments.json, figures)


if __name__ == "__main__":
    main()
