"""A join on the privacy unit with a public reference table, and a CASE band, beside raw DuckDB.

jeugdzorg joined to residents on person_id, per wijk, per 1,000 inhabitants from the public kerncijfers
table; and residents counted per age band (a CASE expression). The engine time is what the gateway does
minus HTTP and the state database: parse, resolve the join in the catalog, derive bounds, build the
OpenDP mechanisms, compile to one statement over the verified snapshots, run it, release and divide.
The raw time is the same question in plain DuckDB over the source files, without privacy.

    python benchmarks/join.py [--quick] [--residents N] [--runs N] [--json PATH]

Target (issue 16): at 1,000,000 residents, engine <= 1.5 x raw DuckDB + 5 ms.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import _harness  # benchmarks/ is on sys.path when run as a script
import duckdb

from gateway.data.catalog import load_catalog
from gateway.data.snapshots import SnapshotStore
from gateway.data.sources import Sources
from gateway.keys.snapshot_seed import load_or_create_seed
from gateway.query import service as query_service
from gateway.query.validate import validate_plan
from policies.models import Grant

EPSILON = 1.0
QUERIES = [
    (
        "jeugdzorg_per_1000_per_wijk",
        "SELECT r.wijk, COUNT(*) * 1000.0 / k.inwoners AS per_1000 FROM jeugdzorg j "
        "JOIN residents r ON j.person_id = r.person_id JOIN kerncijfers k ON r.wijk = k.wijk GROUP BY r.wijk",
        "SELECT r.wijk, count(*) * 1000.0 / any_value(k.inwoners) FROM {jeugdzorg} j "
        "JOIN {residents} r ON j.person_id = r.person_id JOIN {kerncijfers} k ON r.wijk = k.wijk GROUP BY r.wijk",
    ),
    (
        "count_per_age_band",
        "SELECT CASE WHEN birth_year > 2008 THEN 'jong' WHEN birth_year > 1959 THEN 'midden' ELSE 'oud' END AS band, "
        "COUNT(*) FROM residents GROUP BY band",
        "SELECT CASE WHEN birth_year > 2008 THEN 'jong' WHEN birth_year > 1959 THEN 'midden' ELSE 'oud' END AS band, "
        "count(*) FROM {residents} GROUP BY band",
    ),
]
_INGEST = """
import sys
from pathlib import Path
from gateway.data.catalog import load_catalog
from gateway.data.ingestion import snapshot_datasets
from gateway.data.snapshots import SnapshotStore
from gateway.keys.snapshot_seed import load_or_create_seed
data_dir = Path(sys.argv[1])
catalog = load_catalog(data_dir / "catalog.yaml")
store = SnapshotStore(data_dir / "snapshots", load_or_create_seed(data_dir / "snapshot-seed.key"))
for name in snapshot_datasets(catalog):
    store.ensure(name, catalog.datasets[name])
"""


def _prepare(data_dir: Path, residents: int) -> None:
    """The demo and its snapshots, in child processes (their memory is not this one's)."""
    subprocess.run(
        [sys.executable, "-m", "gateway.cli", "demo", "--data-dir", str(data_dir), "--residents", str(residents),
         "--no-serve"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    subprocess.run([sys.executable, "-c", _INGEST, str(data_dir)], check=True)


def _engine(data_dir: Path, sources: Sources, sql: str) -> Callable[[], object]:
    catalog = load_catalog(data_dir / "catalog.yaml")
    grant = Grant(budget_period="month", epsilon_per_period=1e9, legal_basis="public_task")
    limits = query_service.QueryLimits(default_epsilon=EPSILON, max_epsilon=EPSILON, max_groups=10_000)

    def run() -> object:
        resolved = query_service.resolve_sql(sql, catalog, sources)
        validate_plan(resolved.plan, resolved.dataset)
        charged = resolved.private[0]
        relation = query_service.statement_relation(resolved, catalog, sources)
        prepared = query_service.build_release(
            resolved.plan,
            resolved.dataset,
            grant,
            epsilon=EPSILON,
            limits=limits,
            budget=catalog.space_budget(charged),
            relation=relation,
        )
        prepared = replace(prepared, relation=relation, resolved=resolved)
        answer = query_service.execute(prepared, sources)
        assert answer.rows, "the question has an answer"
        return answer

    return run


def run(residents: int, runs: int) -> dict[str, Any]:
    figures: dict[str, Any] = {"benchmark": "join", "residents": residents, "runs": runs}
    with tempfile.TemporaryDirectory() as temporary:
        data_dir = Path(temporary) / "demo"
        _prepare(data_dir, residents)
        snapshots = SnapshotStore(data_dir / "snapshots", load_or_create_seed(data_dir / "snapshot-seed.key"))
        sources = Sources(snapshots=snapshots)
        raw = duckdb.connect()
        files = {
            name: f"read_parquet('{data_dir / f'{name}.parquet'}')"
            for name in ("jeugdzorg", "residents", "kerncijfers")
        }
        for name, sql, raw_sql in QUERIES:
            statement = raw_sql.format(**files)
            engine_ms, raw_ms = _harness.interleaved_medians(
                [_engine(data_dir, sources, sql), lambda statement=statement: raw.execute(statement).fetchall()], runs
            )
            figures[f"{name}_engine_ms"] = engine_ms
            figures[f"{name}_raw_duckdb_ms"] = raw_ms
            figures[f"{name}_engine_over_raw_ratio"] = engine_ms / raw_ms
            figures[f"{name}_target_ms"] = 1.5 * raw_ms + 5
        sources.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 residents and 10 runs (under a minute)")
    parser.add_argument("--residents", type=int, default=None, help="default 1,000,000")
    parser.add_argument("--runs", type=int, default=None, help="default 30")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as a flat JSON object")
    arguments = parser.parse_args()
    residents = arguments.residents or (100_000 if arguments.quick else 1_000_000)
    runs = arguments.runs or (10 if arguments.quick else 30)
    figures = run(residents, runs)
    print(f"joins and expressions on {residents:,} residents, median of {runs} runs (ms)")
    print(f"{'query':<30}{'engine':>9}{'raw duckdb':>12}{'ratio':>8}{'target':>9}")
    problems = []
    for name, _, _ in QUERIES:
        engine_ms, target = figures[f"{name}_engine_ms"], figures[f"{name}_target_ms"]
        print(
            f"{name:<30}{engine_ms:>9.2f}{figures[f'{name}_raw_duckdb_ms']:>12.2f}"
            f"{figures[f'{name}_engine_over_raw_ratio']:>8.2f}{target:>9.2f}"
        )
        if engine_ms > target:
            problems.append(f"{name}: engine {engine_ms:.1f} ms > 1.5 x raw + 5 ms ({target:.1f} ms)")
    if arguments.json is not None:
        _harness.write_figures(arguments.json, figures)
    if problems:
        print("\n".join(problems))
        raise SystemExit(1)


if __name__ == "__main__":
    main()
