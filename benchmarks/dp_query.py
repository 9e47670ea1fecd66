"""The DP query engine on the demo gemeente, beside raw DuckDB on the equivalent non-private queries.

For five representative queries (and one that selects its groups) this measures, in one run:

* the in-process engine time: parse, check against the catalog, plan the statistics, build the OpenDP
  mechanisms, compile, run the pushed-down statement, release (no HTTP, no state database);
* the raw DuckDB time of the same question without privacy;
* the HTTP end-to-end time through a served gateway (authentication, casbin, budget, audit, commit);
* peak RSS after running on a small and on the full data set, to show memory does not grow with rows.

    python benchmarks/dp_query.py [--quick] [--residents N] [--runs N] [--json PATH]

Targets (issue 5): engine <= 1.5 x raw DuckDB + 3 ms; HTTP end to end <= 25 ms median for count per wijk.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import httpx
from _harness import (  # benchmarks/ is on sys.path when run as a script
    free_port,
    interleaved_medians,
    serving,
    write_figures,
)

from gateway.data.catalog import load_catalog
from gateway.data.relations import snapshot_relation
from gateway.data.snapshots import SnapshotStore
from gateway.data.sources import Sources
from gateway.keys.snapshot_seed import load_or_create_seed
from gateway.query import service as query_service
from gateway.query.validate import validate_plan
from gateway.settings import Settings
from policies.models import Grant

EPSILON = 1.0
# (name, DP query, the equivalent non-private DuckDB query over {residents})
QUERIES = [
    ("count_per_wijk", "SELECT wijk, COUNT(*) FROM residents GROUP BY wijk",
     "SELECT wijk, count(*) FROM {residents} GROUP BY wijk"),
    ("mean_income_per_wijk", "SELECT wijk, AVG(income) FROM residents GROUP BY wijk",
     "SELECT wijk, avg(income) FROM {residents} GROUP BY wijk"),
    ("median_income", "SELECT MEDIAN(income) FROM residents",
     "SELECT median(income) FROM {residents}"),
    ("household_histogram", "SELECT household_type, COUNT(*) FROM residents GROUP BY household_type",
     "SELECT household_type, count(*) FROM {residents} GROUP BY household_type"),
    ("filtered_sum", "SELECT SUM(income) FROM residents WHERE birth_year BETWEEN 1960 AND 1990 AND sex = 'V'",
     "SELECT sum(income) FROM {residents} WHERE birth_year BETWEEN 1960 AND 1990 AND sex = 'V'"),
    # Not one of the five: grouping by a column without public keys (partition selection).
    ("count_per_birth_year", "SELECT birth_year, COUNT(*) FROM residents GROUP BY birth_year",
     "SELECT birth_year, count(*) FROM {residents} GROUP BY birth_year"),
]  # fmt: skip


def _median_ms(function: Callable[[], object], runs: int) -> float:
    return interleaved_medians([function], runs)[0]


def _build(data_dir: Path, residents: int) -> None:
    """The demo data is built in a child process, so its memory does not count towards this one's RSS."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "demo",
            "--data-dir",
            str(data_dir),
            "--residents",
            str(residents),
            "--no-serve",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )


_INGEST = """
import json, resource, sys, time
from pathlib import Path
from gateway.data.catalog import load_catalog
from gateway.data.snapshots import SnapshotStore
from gateway.keys.snapshot_seed import load_or_create_seed
data_dir = Path(sys.argv[1])
catalog = load_catalog(data_dir / "catalog.yaml")
store = SnapshotStore(data_dir / "snapshots", load_or_create_seed(data_dir / "snapshot-seed.key"))
start = time.perf_counter()
report = store.ingest("residents", catalog.datasets["residents"])
seconds = time.perf_counter() - start
for name in catalog.datasets:
    if name != "residents" and "aggregate" in catalog.datasets[name].actions:
        store.ensure(name, catalog.datasets[name])
print(json.dumps({"seconds": seconds, "rows": report.rows,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _ingest(data_dir: Path) -> dict[str, float]:
    """Ingest the demo's files into snapshots in a child process of its own (its time and peak RSS are
    those of the ingestion alone); the residents' figures are returned."""
    result = subprocess.run([sys.executable, "-c", _INGEST, str(data_dir)], check=True, capture_output=True, text=True)
    figures: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def _engine(catalog_path: Path, sources: Sources, sql: str) -> Callable[[], object]:
    """The engine as the gateway runs it, minus authentication, the state database and HTTP: on the
    dataset's verified snapshot (``_ingest`` made it)."""
    catalog = load_catalog(catalog_path)
    data_dir = catalog_path.parent
    snapshots = SnapshotStore(data_dir / "snapshots", load_or_create_seed(data_dir / "snapshot-seed.key"))
    grant = Grant(budget_period="month", epsilon_per_period=1e9, legal_basis="public_task")
    limits = query_service.QueryLimits(default_epsilon=EPSILON, max_epsilon=EPSILON, max_groups=10_000)

    def run() -> object:
        plan, dataset = query_service.plan_query(sql, catalog)
        validate_plan(plan, dataset)
        snapshot = snapshots.current(plan.dataset)
        assert snapshot is not None, "ingest first"
        prepared = query_service.build_release(
            plan,
            dataset,
            grant,
            epsilon=EPSILON,
            limits=limits,
            budget=catalog.space_budget(plan.dataset),
            relation=snapshot_relation(str(snapshot.path)),
        )
        return query_service.execute(prepared, sources)

    return run


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _http_ms(data_dir: Path, runs: int) -> dict[str, float]:
    keys = json.loads((data_dir / "demo-keys.json").read_text())
    settings = Settings(_env_file=None, data_dir=data_dir, port=free_port(), max_query_epsilon=2.0)  # type: ignore[call-arg]
    figures = {}
    with (
        serving(settings) as base_url,
        httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {keys['analyst']}"}) as client,
    ):
        for name, sql, _ in QUERIES:
            # The demo grant allows 10 epsilon a month: a small epsilon keeps the benchmark within it.
            body = {"purpose": "beleidsinformatie", "sql": sql, "epsilon": 1.5 / (len(QUERIES) * (runs + 1))}

            def ask(body: dict[str, Any] = body) -> None:
                client.post("/v1/query", json=body).raise_for_status()

            figures[name] = _median_ms(ask, runs)
    return figures


def run(residents: int, runs: int, small: int) -> dict[str, Any]:
    figures: dict[str, Any] = {"benchmark": "dp_query", "residents": residents, "runs": runs}
    with tempfile.TemporaryDirectory() as temporary:
        small_dir, full_dir = Path(temporary) / "small", Path(temporary) / "full"
        _build(small_dir, small)
        _build(full_dir, residents)
        _ingest(small_dir)
        ingestion = _ingest(full_dir)
        figures["ingest_residents_ms"] = ingestion["seconds"] * 1000
        figures["ingest_residents_rows"] = ingestion["rows"]
        figures["ingest_peak_rss_mb"] = ingestion["peak_rss_mb"]
        sources = Sources()
        for _, sql, _ in QUERIES:
            _median_ms(_engine(small_dir / "catalog.yaml", sources, sql), 3)
        figures["peak_rss_small_mb"] = _peak_rss_mb()

        raw = duckdb.connect()
        residents_file = f"read_parquet('{full_dir / 'residents.parquet'}')"
        for name, sql, raw_sql in QUERIES:
            engine_ms = _median_ms(_engine(full_dir / "catalog.yaml", sources, sql), runs)
            raw_ms = _median_ms(
                lambda raw_sql=raw_sql: raw.execute(raw_sql.format(residents=residents_file)).fetchall(), runs
            )
            figures[f"{name}_engine_ms"] = engine_ms
            figures[f"{name}_raw_duckdb_ms"] = raw_ms
            figures[f"{name}_engine_over_raw_ratio"] = engine_ms / raw_ms
            figures[f"{name}_target_ms"] = 1.5 * raw_ms + 3
        figures["peak_rss_full_mb"] = _peak_rss_mb()
        sources.close()
        for name, http_ms in _http_ms(full_dir, runs).items():
            figures[f"{name}_http_ms"] = http_ms
        figures["peak_rss_after_http_mb"] = _peak_rss_mb()
    return figures


def _table(figures: dict[str, Any]) -> str:
    lines = [
        f"DP query engine on {figures['residents']:,} residents, median of {figures['runs']} runs (ms)",
        f"{'query':<22}{'engine':>9}{'raw duckdb':>12}{'ratio':>8}{'target':>9}{'http e2e':>10}",
    ]
    for name, _, _ in QUERIES:
        lines.append(
            f"{name:<22}{figures[f'{name}_engine_ms']:>9.2f}{figures[f'{name}_raw_duckdb_ms']:>12.2f}"
            f"{figures[f'{name}_engine_over_raw_ratio']:>8.2f}{figures[f'{name}_target_ms']:>9.2f}"
            f"{figures[f'{name}_http_ms']:>10.2f}"
        )
    lines.append(
        f"ingestion of residents into its snapshot: {figures['ingest_residents_ms'] / 1000:.2f} s for "
        f"{figures['ingest_residents_rows']:,} rows, peak RSS {figures['ingest_peak_rss_mb']:.0f} MB (own process)"
    )
    lines.append(
        f"peak RSS: {figures['peak_rss_small_mb']:.0f} MB after the small data set, "
        f"{figures['peak_rss_full_mb']:.0f} MB after the full one, "
        f"{figures['peak_rss_after_http_mb']:.0f} MB after HTTP"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100,000 residents and 15 runs (under a minute)")
    parser.add_argument("--residents", type=int, default=None, help="default 1,000,000")
    parser.add_argument("--runs", type=int, default=None, help="default 50")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as a flat JSON object")
    arguments = parser.parse_args()
    residents = arguments.residents or (100_000 if arguments.quick else 1_000_000)
    runs = arguments.runs or (15 if arguments.quick else 50)
    figures = run(residents, runs, small=min(20_000, residents))
    print(_table(figures))
    if arguments.json is not None:
        write_figures(arguments.json, figures)


if __name__ == "__main__":
    main()
