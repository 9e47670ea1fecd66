"""Policy decisions: Datapoort's policy engine beside a plain ``casbin.Enforcer`` on the same policy.

The policy (issue 6): 10,000 grants over 200 organisations and 5,000 principals, with roles per
organisation, role inheritance, dataset patterns, purposes and one deny rule per organisation. It lives in
a real (SQLite) state database and is loaded by ``PolicyEngine`` as the gateway loads it.

Measured in one run, per decision (``allows``), on requests drawn at random (almost all distinct):

* ``cold``: every request is new to the engine (the decision cache is empty), so casbin's FastEnforcer
  decides over the request's (domain, action) slice of the policy;
* ``warm``: the same requests again, answered from the decision cache;
* ``plain``: casbin's own ``Enforcer`` on the same lines (a linear scan), on a sample; and the decisions of
  the two are compared, so a fast wrong answer cannot pass.

    python benchmarks/policy_decision.py [--quick] [--json PATH]

Targets: median decision <= 100 us and p99 <= 1 ms (cold), printed beside plain casbin as a ratio.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import casbin
from _harness import write_figures  # first: it keeps benchmarks/audit.py from shadowing the audit package
from sqlalchemy import insert

from gateway.store.database import create_state_engine, session_factory
from gateway.store.migrate import upgrade
from policies.enforcer import ALLOW, DENY, PolicyEngine, model_text, principal_subject, role_subject
from policies.models import CasbinRule

ORGANISATIONS = 200
PRINCIPALS = 5_000
GRANTS = 10_000
ROLES = ("analist", "senior-analist", "onderzoeker", "partner", "fg")
ACTIONS = ("aggregate", "export", "reidentify", "audit:read", "admin")
PURPOSES = tuple(f"doel-{index:02d}" for index in range(20))
DOMAINS = ("sd", "vh", "wonen", "jeugd", "werk")
DATASETS = tuple(f"{domain}_{index:02d}" for domain in DOMAINS for index in range(20))


def _policy(seed: int) -> tuple[list[dict[str, str | None]], list[tuple[str, str, str]]]:
    """casbin_rule rows, and (principal subject, organisation) pairs to draw requests for."""
    rng = random.Random(seed)
    rows: list[dict[str, str | None]] = []
    members: list[tuple[str, str, str]] = []

    def rule(ptype: str, *values: str) -> None:
        padded = [*values, *([None] * (6 - len(values)))]
        rows.append({"ptype": ptype, **{f"v{index}": value for index, value in enumerate(padded)}})

    organisations = [f"org{index:03d}" for index in range(ORGANISATIONS)]
    for organisation in organisations:
        rule("g", role_subject("senior-analist"), role_subject("analist"), organisation)  # inheritance
    for index in range(PRINCIPALS):
        organisation = organisations[index % ORGANISATIONS]
        subject = principal_subject(f"p{index:05d}")
        for role in rng.sample(ROLES, rng.choice((1, 1, 2))):
            rule("g", subject, role_subject(role), organisation)
        members.append((subject, organisation, f"p{index:05d}"))
    for index in range(GRANTS - ORGANISATIONS):
        organisation = organisations[index % ORGANISATIONS]
        if rng.random() < 0.8:
            subject = role_subject(rng.choice(ROLES))
        else:
            subject = principal_subject(f"p{rng.randrange(index % ORGANISATIONS, PRINCIPALS, ORGANISATIONS):05d}")
        dataset = rng.choice(DATASETS) if rng.random() < 0.7 else f"{rng.choice(DOMAINS)}_*"
        rule("p", subject, organisation, dataset, rng.choice(ACTIONS), rng.choice(PURPOSES), ALLOW)
    for organisation in organisations:
        rule("p", role_subject("partner"), organisation, "*", "reidentify", "*", DENY)
    return rows, members


def _requests(
    rows: list[dict[str, str | None]], members: list[tuple[str, str, str]], count: int, seed: int
) -> list[tuple[str, str, str, str, str]]:
    """Half of the requests are random (nearly all denied); half aim at a grant: a member of the granted
    role (or the granted principal) asks for a dataset the grant's pattern covers, with its action and
    purpose (mostly allowed, unless a deny rule or a missing role says otherwise)."""
    rng = random.Random(seed)
    grants = [row for row in rows if row["ptype"] == "p" and row["v5"] == ALLOW]
    holders: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        if row["ptype"] == "g" and str(row["v0"]).startswith("principal:"):
            holders.setdefault((str(row["v1"]), str(row["v2"])), []).append(str(row["v0"]))
    requests = []
    for index in range(count):
        if index % 2 == 0:
            subject, organisation, _ = rng.choice(members)
            requests.append((subject, organisation, rng.choice(DATASETS), rng.choice(ACTIONS), rng.choice(PURPOSES)))
            continue
        grant = rng.choice(grants)
        granted, organisation = str(grant["v0"]), str(grant["v1"])
        subject = (
            granted
            if granted.startswith("principal:")
            else rng.choice(holders.get((granted, organisation)) or [principal_subject("nobody")])
        )
        pattern = str(grant["v2"])
        dataset = rng.choice([name for name in DATASETS if name.startswith(pattern.rstrip("*"))])
        requests.append((subject, organisation, dataset, str(grant["v3"]), str(grant["v4"])))
    return requests


def _timed_us(decide: Any, requests: list[tuple[str, str, str, str, str]]) -> tuple[list[float], list[bool]]:
    timings, decisions = [], []
    for request in requests:
        start = time.perf_counter_ns()
        decisions.append(bool(decide(*request)))
        timings.append((time.perf_counter_ns() - start) / 1000)
    return timings, decisions


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def run(requests_count: int, plain_count: int, seed: int = 7) -> dict[str, Any]:
    rows, members = _policy(seed)
    figures: dict[str, Any] = {
        "benchmark": "policy_decision",
        "policy_lines": len(rows),
        "grants": GRANTS,
        "organisations": ORGANISATIONS,
        "principals": PRINCIPALS,
        "requests": requests_count,
    }
    with tempfile.TemporaryDirectory() as directory:
        engine = create_state_engine(f"sqlite:///{Path(directory) / 'state.db'}")
        upgrade(engine)
        sessions = session_factory(engine)
        with sessions() as session:
            session.execute(insert(CasbinRule), rows)
            session.commit()
        start = time.perf_counter()
        policy = PolicyEngine(sessions, poll_seconds=3600)
        figures["load_ms"] = (time.perf_counter() - start) * 1000
        engine.dispose()

    requests = _requests(rows, members, requests_count, seed + 1)
    cold, decisions = _timed_us(policy.allows, requests)
    warm, again = _timed_us(policy.allows, requests)
    if again != decisions:  # pragma: no cover - a cache that changes answers is a bug, not a figure
        raise SystemExit("the decision cache changed a decision")

    model = casbin.Model()
    model.load_model_from_text(model_text())
    plain = casbin.Enforcer(model)
    for row in rows:
        values = [row[f"v{index}"] for index in range(6) if row[f"v{index}"] is not None]
        if row["ptype"] == "p":
            plain.add_policy(*values)
        else:
            plain.add_grouping_policy(*values)
    sample = requests[:plain_count]
    plain_timings, plain_decisions = _timed_us(plain.enforce, sample)
    if plain_decisions != decisions[:plain_count]:
        raise SystemExit("Datapoort's engine and plain casbin disagree on the same policy")

    figures.update(
        {
            "allowed_share": sum(decisions) / len(decisions),
            "cold_median_us": statistics.median(cold),
            "cold_p99_us": _p99(cold),
            "warm_median_us": statistics.median(warm),
            "warm_p99_us": _p99(warm),
            "plain_casbin_median_us": statistics.median(plain_timings),
            "plain_casbin_p99_us": _p99(plain_timings),
            "plain_sample": plain_count,
        }
    )
    figures["plain_over_cold_median_ratio"] = figures["plain_casbin_median_us"] / figures["cold_median_us"]
    figures["plain_over_warm_median_ratio"] = figures["plain_casbin_median_us"] / figures["warm_median_us"]
    figures["cold_median_ms"] = figures["cold_median_us"] / 1000
    figures["plain_casbin_median_ms"] = figures["plain_casbin_median_us"] / 1000
    return figures


def _table(figures: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"policy: {figures['grants']:,} grants, {figures['organisations']} organisations, "
            f"{figures['principals']:,} principals ({figures['policy_lines']:,} casbin lines; "
            f"loaded in {figures['load_ms']:.0f} ms)",
            f"{'decision (us)':<34}{'median':>10}{'p99':>10}",
            f"{'Datapoort, new requests (cold)':<34}{figures['cold_median_us']:>10.1f}{figures['cold_p99_us']:>10.1f}",
            f"{'Datapoort, repeated (cached)':<34}{figures['warm_median_us']:>10.1f}{figures['warm_p99_us']:>10.1f}",
            f"{'plain casbin.Enforcer':<34}{figures['plain_casbin_median_us']:>10.1f}"
            f"{figures['plain_casbin_p99_us']:>10.1f}",
            f"plain / Datapoort (median): {figures['plain_over_cold_median_ratio']:.0f}x cold, "
            f"{figures['plain_over_warm_median_ratio']:.0f}x cached; "
            f"same decisions on {figures['plain_sample']} requests; {figures['allowed_share']:.1%} allowed",
            "targets: median <= 100 us, p99 <= 1000 us",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5,000 requests, 20 for plain casbin (under a minute)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as a flat JSON object")
    arguments = parser.parse_args()
    requests_count, plain_count = (5_000, 20) if arguments.quick else (50_000, 200)
    figures = run(requests_count, plain_count)
    print(_table(figures))
    if arguments.json is not None:
        write_figures(arguments.json, figures)


if __name__ == "__main__":
    main()
