"""A black-box privacy audit of the engine: empirical epsilon lower bounds beside the declared epsilon.

For COUNT, SUM, AVG, VARIANCE, MEDIAN and partition selection, it builds neighbouring datasets D and D'
(D plus one person with ``max_contributions`` rows at the column's upper bound; and D plus one person with
more rows than allowed), ingests each into its verified snapshot, reads the exact statistics through the
path the HTTP route uses (parse, check, price, compile against the snapshot, one statement), and
releases them many times with fresh noise. From the released values it derives an empirical lower
bound on the privacy loss: a threshold test ``output > t`` (or ``<=``) is chosen on one half of the
samples, then on the other half Clopper-Pearson bounds give, with confidence ``1 - alpha``,
``epsilon >= log((P_D'[test] - delta) / P_D[test])`` (and the same with D and D' swapped). A bound above
the declared epsilon proves the guarantee broken; a correct mechanism stays below it (with probability at
least ``1 - alpha`` per test).

It then asks the same questions of two served gateways over HTTP, one on D and one on D' (D' with a
malformed record, and D' with one person having more rows than allowed): status and error text must
agree, and so must the latency (medians within 20%, a two-sample Kolmogorov-Smirnov test not rejecting
at 1%).

    python benchmarks/privacy_audit.py [--quick] [--releases N] [--json PATH]

``tests/test_privacy_audit.py`` runs it at a small size in ``make test``, and checks that the planted bugs
(noise at half the certified scale; bounding skipped) make it fail.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import _harness
import numpy as np
from scipy import stats

from gateway.data.catalog import Catalog, load_catalog
from gateway.data.snapshots import SnapshotStore
from gateway.data.sources import Sources
from gateway.query import service as query_service
from gateway.query.validate import validate_plan
from policies.models import Grant

MAX_CONTRIBUTIONS = 2
UPPER = 100
EPSILON = 1.0
DELTA = 1e-6
SEED = bytes(range(32))
CATALOG = f"""
unit_spaces:
  people:
    global_budget: {{epsilon_per_period: 1000000000, delta_per_period: 0.5}}
datasets:
  residents:
    source: {{kind: csv, path: residents.csv}}
    privacy_unit: person_id
    unit_space: people
    max_contributions: {MAX_CONTRIBUTIONS}
    columns:
      person_id: {{type: string, kind: identifier}}
      wijk: {{type: string, kind: quasi_identifier, public_keys: [A, B]}}
      pc: {{type: string, kind: quasi_identifier}}
      amount: {{type: integer, kind: sensitive, lower: 0, upper: {UPPER}, quantile_candidates: 101}}
  visits:
    source: {{kind: csv, path: visits.csv}}
    privacy_unit: person_id
    unit_space: people
    max_contributions: {MAX_CONTRIBUTIONS}
    columns:
      person_id: {{type: string, kind: identifier}}
      kind: {{type: string, public_keys: [x, y]}}
"""
MAX_CANDIDATES = 400
CHOICE_STRICTNESS = 1e-4
"""The test is chosen on the first half at ``alpha * CHOICE_STRICTNESS``."""
"""Thresholds tried on the first half of the samples."""
ABSENT = -1e12
"""The output of a selection query whose group was not released."""


@dataclass(frozen=True, slots=True)
class Mechanism:
    name: str
    sql: str
    group: str
    """The group whose released value is the test statistic."""


MECHANISMS = [
    Mechanism("count", "SELECT wijk, COUNT(*) FROM residents GROUP BY wijk", "A"),
    Mechanism("sum", "SELECT wijk, SUM(amount) FROM residents GROUP BY wijk", "A"),
    Mechanism("avg", "SELECT wijk, AVG(amount) FROM residents GROUP BY wijk", "A"),
    Mechanism("variance", "SELECT wijk, VARIANCE(amount) FROM residents GROUP BY wijk", "A"),
    Mechanism("median", "SELECT wijk, MEDIAN(amount) FROM residents GROUP BY wijk", "A"),
    Mechanism("selection", "SELECT pc, COUNT(*) FROM residents GROUP BY pc", "G"),
    # A join on the privacy unit: the victim's joined rows are bounded by the product of the datasets'
    # max_contributions (2 x 2), which the sensitivity takes.
    Mechanism(
        "join",
        "SELECT r.wijk, COUNT(*) FROM residents r JOIN visits v ON r.person_id = v.person_id GROUP BY r.wijk",
        "A",
    ),
    # A row-level CASE inside an aggregate: its bounds (0 and 1) come from the constants.
    Mechanism("case", "SELECT wijk, SUM(CASE WHEN amount > 50 THEN 1 ELSE 0 END) FROM residents GROUP BY wijk", "A"),
]
PAIRS = ("m_rows_at_the_bound", "more_rows_than_allowed")


# --- the datasets -------------------------------------------------------------------------------------


def base_rows(persons: int, selection_rows: int) -> list[str]:
    """D: ``persons`` people in wijk A and B with one or two rows each (values from a fixed generator:
    test data, not a secret), and ``selection_rows`` rows, one person each, in the postcode G whose
    release partition selection decides."""
    generator = np.random.default_rng(20261203)
    rows = []
    for person in range(persons):
        wijk = "A" if person % 3 else "B"
        for _ in range(1 + int(generator.integers(0, 2))):
            rows.append(f"p{person},{wijk},H{person % 7},{int(generator.integers(0, UPPER + 1))}")
    rows += [f"g{person},B,G,{int(generator.integers(0, UPPER + 1))}" for person in range(selection_rows)]
    return rows


def victim_rows(count: int) -> list[str]:
    """One person with ``count`` rows, each at the extremes: wijk A, postcode G, the amount's upper bound."""
    return [f"victim,A,G,{UPPER}"] * count


def visit_rows(rows: list[str]) -> list[str]:
    """Every person's visits: 0, 1 or 2 by the person's number; the victim one per row it has."""
    visits = []
    for person in dict.fromkeys(row.split(",", 1)[0] for row in rows):
        count = sum(1 for row in rows if row.startswith("victim,")) if person == "victim" else hash_count(person)
        visits += [f"{person},{'xy'[index % 2]}" for index in range(count)]
    return visits


def hash_count(person: str) -> int:
    return int(person.lstrip("pg") or 0) % 3 if person[:1] in ("p", "g") else 1


def write_dataset(directory: Path, rows: list[str]) -> Catalog:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "residents.csv").write_text("person_id,wijk,pc,amount\n" + "\n".join(rows) + "\n")
    (directory / "visits.csv").write_text("person_id,kind\n" + "\n".join(visit_rows(rows)) + "\n")
    (directory / "catalog.yaml").write_text(CATALOG)
    return load_catalog(directory / "catalog.yaml")


def selection_threshold(catalog: Catalog) -> int:
    prepared = _prepare(catalog, next(m.sql for m in MECHANISMS if m.name == "selection"), sources=None)
    assert prepared.selection is not None
    return int(prepared.selection.threshold)


# --- the engine path ----------------------------------------------------------------------------------


def _prepare(catalog: Catalog, sql: str, sources: Sources | None) -> query_service.PreparedQuery:
    """As the route prepares: the plan resolved (a join into one relation over the snapshots), priced."""
    resolved = query_service.resolve_sql(sql, catalog, sources)
    plan, dataset = resolved.plan, resolved.dataset
    validate_plan(plan, dataset)
    relation = query_service.statement_relation(resolved, catalog, sources) if sources is not None else None
    grant = Grant(id=0, legal_basis="public_task", epsilon_per_period=1e9, budget_period="month")
    prepared = query_service.build_release(
        plan,
        dataset,
        grant,
        epsilon=EPSILON,
        delta=DELTA,
        limits=query_service.QueryLimits(
            default_epsilon=EPSILON, max_epsilon=EPSILON, max_groups=10_000, max_delta=DELTA
        ),
        relation=relation,
        budget=catalog.space_budget(resolved.private[0]),
    )
    return replace(prepared, relation=relation, resolved=resolved)


@dataclass(slots=True)
class Engine:
    """One dataset, ingested into its snapshot, asked through the engine the way the route asks."""

    catalog: Catalog
    sources: Sources

    @classmethod
    def on(cls, directory: Path) -> Engine:
        catalog = load_catalog(directory / "catalog.yaml")
        store = SnapshotStore(directory / "snapshots", SEED)
        for name in ("residents", "visits"):
            store.ensure(name, catalog.datasets[name])
        return cls(catalog, Sources(snapshots=store))

    def releases(self, mechanism: Mechanism, count: int) -> tuple[np.ndarray, float, float]:
        """``count`` released values of the mechanism's group (fresh noise each), and the declared
        (epsilon, delta) the engine certified for one query."""
        prepared = _prepare(self.catalog, mechanism.sql, self.sources)
        rows = query_service.read(prepared, self.sources)  # one read, as one query does
        values = np.empty(count)
        for index in range(count):
            answer = query_service.release(prepared, rows)
            released = {row[0]: row[1] for row in answer.rows}
            value = released.get(mechanism.group)
            values[index] = ABSENT if value is None else float(value)
        return values, prepared.epsilon, prepared.delta

    def close(self) -> None:
        self.sources.close()


# --- the statistics -----------------------------------------------------------------------------------


def _clopper_pearson(successes: int, trials: int, alpha: float) -> tuple[float, float]:
    """One-sided (1 - alpha) bounds on a binomial proportion: (lower, upper)."""
    lower = 0.0 if successes == 0 else float(stats.beta.ppf(alpha, successes, trials - successes + 1))
    upper = 1.0 if successes == trials else float(stats.beta.ppf(1 - alpha, successes + 1, trials - successes))
    return lower, upper


def _bound(high_hits: int, high_n: int, low_hits: int, low_n: int, *, delta: float, alpha: float) -> float:
    """log((P_high - delta) / P_low) at its (1 - alpha) lower confidence bound (each proportion at
    alpha / 2, Clopper-Pearson); 0 where the data shows nothing."""
    high_lower, _ = _clopper_pearson(high_hits, high_n, alpha / 2)
    _, low_upper = _clopper_pearson(low_hits, low_n, alpha / 2)
    if high_lower - delta <= 0 or low_upper <= 0:
        return 0.0
    return max(math.log((high_lower - delta) / low_upper), 0.0)


def epsilon_lower_bound(d: np.ndarray, d_prime: np.ndarray, *, delta: float, alpha: float) -> float:
    """An empirical lower bound on epsilon from samples of the output on D and on D'.

    The test (a threshold, its direction, and which dataset it favours) is the one whose bound is
    highest on the first half of each sample; it is evaluated on the second half only, so the choice
    does not bias the bound. With probability at least ``1 - alpha`` the bound is at most the
    mechanism's true privacy loss."""
    half_d, half_p = len(d) // 2, len(d_prime) // 2
    choose_d, check_d = np.sort(d[:half_d]), d[half_d:]
    choose_p, check_p = np.sort(d_prime[:half_p]), d_prime[half_p:]
    candidates = np.unique(np.concatenate([choose_d, choose_p]))
    if len(candidates) > MAX_CANDIDATES:  # continuous outputs: evenly spaced quantiles are enough
        candidates = np.unique(np.quantile(candidates, np.linspace(0, 1, MAX_CANDIDATES), method="lower"))
    # How many of each first half lie at or below every candidate (sorted halves: a binary search each).
    at_most_d = np.searchsorted(choose_d, candidates, side="right")
    at_most_p = np.searchsorted(choose_p, candidates, side="right")
    best = (-1.0, 0.0, True, True)
    for threshold, below_d, below_p in zip(candidates, at_most_d, at_most_p, strict=True):
        for above in (True, False):
            hits_d = int(half_d - below_d if above else below_d)
            hits_p = int(half_p - below_p if above else below_p)
            for favours_prime in (True, False):
                high, low = (
                    ((hits_p, half_p), (hits_d, half_d)) if favours_prime else ((hits_d, half_d), (hits_p, half_p))
                )
                if high[0] <= low[0]:
                    continue
                # Chosen at a far stricter confidence than it is evaluated at: that prefers tests with
                # enough mass, not a far tail whose few hits happened to split well on this half.
                score = _bound(*high, *low, delta=delta, alpha=alpha * CHOICE_STRICTNESS)
                if score > best[0]:
                    best = (score, float(threshold), above, favours_prime)
    _, threshold, above, favours_prime = best
    hits_d = int(np.sum(check_d > threshold if above else check_d <= threshold))
    hits_p = int(np.sum(check_p > threshold if above else check_p <= threshold))
    if favours_prime:
        return _bound(hits_p, len(check_p), hits_d, len(check_d), delta=delta, alpha=alpha)
    return _bound(hits_d, len(check_d), hits_p, len(check_p), delta=delta, alpha=alpha)


@dataclass(frozen=True, slots=True)
class Finding:
    mechanism: str
    pair: str
    declared_epsilon: float
    declared_delta: float
    empirical_epsilon: float

    @property
    def holds(self) -> bool:
        return self.empirical_epsilon <= self.declared_epsilon


@contextmanager
def neighbours(root: Path, persons: int) -> Iterator[dict[str, Engine]]:
    """The engines on D and on each D' (built, ingested, closed afterwards)."""
    probe = write_dataset(root / "probe", base_rows(persons, 0))
    # D holds one row less than the threshold in G: the victim's rows carry G across it.
    below = max(selection_threshold(probe) - 1, 0)
    base = base_rows(persons, below)
    directories = {
        "D": base,
        "m_rows_at_the_bound": base + victim_rows(MAX_CONTRIBUTIONS),
        "more_rows_than_allowed": base + victim_rows(MAX_CONTRIBUTIONS + 3),
    }
    engines = {}
    try:
        for name, rows in directories.items():
            write_dataset(root / name, rows)
            engines[name] = Engine.on(root / name)
        yield engines
    finally:
        for engine in engines.values():
            engine.close()


def audit(
    root: Path,
    *,
    releases: int,
    alpha: float,
    persons: int = 300,
    mechanisms: list[Mechanism] | None = None,
    pairs: tuple[str, ...] = PAIRS,
) -> list[Finding]:
    findings = []
    with neighbours(root, persons) as engines:
        for mechanism in mechanisms or MECHANISMS:
            on_d, epsilon, delta = engines["D"].releases(mechanism, releases)
            for pair in pairs:
                on_d_prime, _, _ = engines[pair].releases(mechanism, releases)
                bound = epsilon_lower_bound(on_d, on_d_prime, delta=delta, alpha=alpha)
                findings.append(Finding(mechanism.name, pair, epsilon, delta, bound))
    return findings


# --- side channels over HTTP ---------------------------------------------------------------------------

SIDE_CHANNEL_QUERIES: list[dict[str, Any]] = [
    {"purpose": "beleidsinformatie", "sql": "SELECT wijk, COUNT(*) FROM residents GROUP BY wijk", "epsilon": 0.01},
    {"purpose": "beleidsinformatie", "sql": "SELECT wijk, AVG(amount) FROM residents GROUP BY wijk", "epsilon": 0.01},
    {"purpose": "beleidsinformatie", "sql": "SELECT pc, COUNT(*) FROM residents GROUP BY pc", "epsilon": 0.01},
    {"purpose": "beleidsinformatie", "sql": "SELECT MEDIAN(nothing) FROM residents"},
    {"purpose": "beleidsinformatie", "sql": "SELECT COUNT(*) FROM residents", "epsilon": 5},
]


@dataclass(frozen=True, slots=True)
class SideChannels:
    pair: str
    same_outcomes: bool
    """Status, and the body of every refusal (the shape of every answer), agree."""
    median_ms_d: float
    median_ms_d_prime: float
    ks_p_value: float

    @property
    def median_ratio(self) -> float:
        return self.median_ms_d_prime / self.median_ms_d

    @property
    def holds(self) -> bool:
        return self.same_outcomes and abs(self.median_ratio - 1) <= 0.2 and self.ks_p_value >= 0.01


def _outcome(response: Any) -> tuple[int, Any]:
    body = response.json()
    if response.status_code != 200:
        body.pop("request_id", None)
        return response.status_code, body
    return 200, (body["columns"], sorted(body["privacy"]))


@contextmanager
def gateway_on(directory: Path) -> Iterator[Callable[[dict[str, Any]], Any]]:
    """A gateway on one dataset (its own state database), and a function that asks it as an analyst."""
    from fastapi.testclient import TestClient
    from sqlalchemy import text

    from gateway.demo import setup
    from gateway.http.app import create_app
    from gateway.settings import Settings
    from gateway.store.database import create_state_engine, session_factory
    from gateway.store.migrate import upgrade

    settings = Settings(  # type: ignore[call-arg]
        data_dir=directory,
        catalog=directory / "catalog.yaml",
        instance="audit",
        rate_limit_per_second=1e6,  # the audit asks as fast as it can
        rate_limit_burst=1e6,
        _env_file=None,
    )
    engine = create_state_engine(settings.state_database_url)
    upgrade(engine)
    keys = setup.provision(session_factory(engine), directory, instance="audit")
    with engine.begin() as connection:  # room for every question the audit asks
        connection.execute(text('UPDATE "grant" SET epsilon_per_period = 1e9, delta_per_period = 0.5'))
    engine.dispose()
    with TestClient(create_app(settings)) as client:
        headers = {"Authorization": f"Bearer {keys['analyst']}"}
        yield lambda body: client.post("/v1/query", json=body, headers=headers)


def side_channels(root: Path, *, requests: int, persons: int = 300) -> list[SideChannels]:
    """Each D' beside a gateway on D of its own, started alike and asked alike (the same history of
    requests, so the state database of neither has more to read)."""
    base = base_rows(persons, 5)
    neighbours = {
        "malformed_record": [*base[:10], 'victim,"A,H1,50', "victim,A,H1,50,surplus", *base[10:]],
        "more_rows_than_allowed": base + victim_rows(MAX_CONTRIBUTIONS + 1),
    }
    results = []
    for pair, rows in neighbours.items():
        write_dataset(root / f"http-{pair}-D", base)
        write_dataset(root / f"http-{pair}", rows)
        with gateway_on(root / f"http-{pair}-D") as ask_d, gateway_on(root / f"http-{pair}") as ask_d_prime:
            same = all(_outcome(ask_d(body)) == _outcome(ask_d_prime(body)) for body in SIDE_CHANNEL_QUERIES)
            timed = SIDE_CHANNEL_QUERIES[0]
            for _ in range(5):  # warm both: plans, file metadata, pages
                ask_d(timed), ask_d_prime(timed)
            times: dict[str, list[float]] = {"D": [], pair: []}
            for index in range(requests):  # interleaved, alternating who goes first
                order = (("D", ask_d), (pair, ask_d_prime)) if index % 2 else ((pair, ask_d_prime), ("D", ask_d))
                for name, ask in order:
                    start = time.perf_counter()
                    response = ask(timed)
                    times[name].append((time.perf_counter() - start) * 1000)
                    same = same and response.status_code == 200
            test = stats.ks_2samp(times["D"], times[pair])
            results.append(
                SideChannels(
                    pair=pair,
                    same_outcomes=same,
                    median_ms_d=statistics.median(times["D"]),
                    median_ms_d_prime=statistics.median(times[pair]),
                    ks_p_value=float(test.pvalue),
                )
            )
    return results


# --- the command --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 releases per dataset (under a minute)")
    parser.add_argument("--releases", type=int, default=None, help="releases per dataset (default 22,000)")
    parser.add_argument("--alpha", type=float, default=0.05, help="1 - confidence of each lower bound")
    parser.add_argument("--requests", type=int, default=None, help="timed HTTP requests per gateway")
    parser.add_argument(
        "--persons", type=int, default=None, help="persons in the datasets the HTTP gateways serve (default 100,000)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures to this JSON file")
    arguments = parser.parse_args()
    releases = arguments.releases or (2_000 if arguments.quick else 22_000)
    requests = arguments.requests or (40 if arguments.quick else 200)
    persons = arguments.persons or (300 if arguments.quick else 100_000)
    figures: dict[str, Any] = {
        "benchmark": "privacy_audit",
        "releases": releases,
        "alpha": arguments.alpha,
        "persons": persons,
        "requests": requests,
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        findings = audit(Path(directory), releases=releases, alpha=arguments.alpha)
        channels = side_channels(Path(directory), requests=requests, persons=persons)
    print(f"\nempirical epsilon lower bounds ({releases:,} releases per dataset, {1 - arguments.alpha:.0%} confidence)")
    print(f"{'mechanism':<10} {'neighbour D':<24} {'declared eps':>12} {'empirical eps':>14} {'ratio':>7}  holds")
    for finding in findings:
        ratio = finding.empirical_epsilon / finding.declared_epsilon
        print(
            f"{finding.mechanism:<10} {finding.pair:<24} {finding.declared_epsilon:>12.4f} "
            f"{finding.empirical_epsilon:>14.4f} {ratio:>7.3f}  {'yes' if finding.holds else 'NO'}"
        )
        key = f"{finding.mechanism}_{finding.pair}"
        figures[f"{key}_declared_epsilon"] = finding.declared_epsilon
        figures[f"{key}_empirical_epsilon"] = finding.empirical_epsilon
        figures[f"{key}_ratio"] = ratio
    print(
        f"\nside channels over HTTP ({requests} interleaved requests per gateway, DP count per wijk, "
        f"{persons:,} persons)"
    )
    print(
        f"{'D prime':<24} {'same outcomes':>13} {'median D ms':>12} {'median Dp ms':>13} {'ratio':>7} "
        f"{'KS p':>7}  holds"
    )
    for channel in channels:
        print(
            f"{channel.pair:<24} {channel.same_outcomes!s:>13} {channel.median_ms_d:>12.2f} "
            f"{channel.median_ms_d_prime:>13.2f} {channel.median_ratio:>7.3f} {channel.ks_p_value:>7.3f}  "
            f"{'yes' if channel.holds else 'NO'}"
        )
        figures[f"latency_{channel.pair}_median_d_ms"] = channel.median_ms_d
        figures[f"latency_{channel.pair}_median_d_prime_ms"] = channel.median_ms_d_prime
        figures[f"latency_{channel.pair}_median_ratio"] = channel.median_ratio
        figures[f"latency_{channel.pair}_ks_p"] = channel.ks_p_value
    figures["total_ms"] = (time.perf_counter() - started) * 1000
    if arguments.json is not None:
        _harness.write_figures(arguments.json, figures)
    if not all(finding.holds for finding in findings) or not all(channel.holds for channel in channels):
        raise SystemExit("the privacy guarantee does not hold on this build")


if __name__ == "__main__":
    main()
