"""The audit log: append throughput on SQLite and PostgreSQL, what an event adds to a request's commit,
and how fast a long chain verifies, beside bare SHA-256 over the same canonical bytes.

* ``append``: one event per transaction (as requests write them), events per second;
* ``added``: the median time an event adds to a transaction that also records a key's use (the request's
  final commit with and without its event);
* ``verify``: a chain built with real hashes (bulk-inserted), verified by ``audit.service.verify_chain``,
  beside hashing the same canonical bytes with nothing else (the floor of any verifier in Python).

    python benchmarks/audit.py [--quick] [--postgres URL] [--json PATH]

PostgreSQL is measured when ``--postgres`` (or ``DATAPOORT_TEST_POSTGRES_URL``) names a database; each run
uses a schema of its own and drops it. Targets (issue 7): verify >= 300,000 events/s; an event adds
<= 1 ms median to a request.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _harness import write_figures  # first: it keeps this file from shadowing the audit package
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, create_engine, insert, make_url, text

from audit.chain import CANONICAL_VERSION, GENESIS_HASH, HASHED_FIELDS, canonical_bytes
from audit.checkpoints import CheckpointPolicy
from audit.models import AuditEvent
from audit.service import EventDraft, append_event
from audit.verification import verify_chain
from gateway.store.database import create_state_engine, read_snapshot, session_factory
from gateway.store.migrate import upgrade
from policies.models import ApiKey, Principal

START = datetime(2026, 11, 30, tzinfo=UTC)
WORKERS = os.cpu_count() or 1


@contextmanager
def _sqlite() -> Iterator[Engine]:
    with tempfile.TemporaryDirectory() as directory:
        engine = create_state_engine(f"sqlite:///{Path(directory) / 'state.db'}")
        upgrade(engine)
        yield engine
        engine.dispose()


@contextmanager
def _postgres(url: str) -> Iterator[Engine]:
    schema = f"dp_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    scoped = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    engine = create_state_engine(scoped.render_as_string(hide_password=False))
    try:
        upgrade(engine)
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _draft(index: int) -> EventDraft:
    return EventDraft(
        request_id=f"{index:032x}",
        action="aggregate",
        decision="allow",
        principal_id="analist-sociaal-domein",
        organisation="sociaal-domein",
        roles="analist",
        dataset="residents",
        purpose="beleidsinformatie",
        legal_basis="public_task",
        query="SELECT wijk, COUNT(*) AS count FROM residents GROUP BY wijk",
        privacy_cost=0.5,
        rows_released=10,
        response_digest=hashlib.sha256(str(index).encode()).hexdigest(),
        client_address="127.0.0.1",
        instance="bench",
        traceparent=f"00-{index:032x}-{index:016x}-01",
    )


def _append_and_added(engine: Engine, events: int) -> dict[str, float]:
    # As the gateway runs: appends also sign a checkpoint when one is due (the default policy).
    sessions = session_factory(engine, CheckpointPolicy(Ed25519PrivateKey.generate()))
    with sessions() as session:
        session.add(Principal(id="p", display_name="p", organisation="o", kind="user", created_at=START))
        session.flush()
        session.add(ApiKey(id="k", principal_id="p", secret_sha256="0" * 64, created_at=START))
        session.commit()
    start = time.perf_counter()
    for index in range(events):
        with sessions() as session:
            append_event(session, _draft(index))
            session.commit()
    elapsed = time.perf_counter() - start
    with_event, without = [], []
    for index in range(min(events, 500)):
        for timings, audited in ((without, False), (with_event, True)):
            with sessions() as session:
                begin = time.perf_counter()
                session.execute(text("UPDATE api_key SET last_used_at = CURRENT_TIMESTAMP WHERE id = 'k'"))
                if audited:
                    append_event(session, _draft(events + index))
                session.commit()
                timings.append((time.perf_counter() - begin) * 1000)
    return {
        "append_per_s": events / elapsed,
        "added_median_ms": statistics.median(with_event) - statistics.median(without),
    }


def _chain_rows(count: int) -> Iterator[dict[str, Any]]:
    previous = GENESIS_HASH
    for index in range(count):
        fields: dict[str, Any] = dict.fromkeys(HASHED_FIELDS)
        fields.update(asdict(_draft(index)))
        fields["sequence"] = index + 1
        fields["occurred_at"] = START + timedelta(microseconds=index)
        fields["prev_hash"] = previous
        fields["canonical_version"] = CANONICAL_VERSION
        fields["hash"] = previous = hashlib.sha256(canonical_bytes(fields)).hexdigest()
        yield fields


def _verify(engine: Engine, count: int) -> dict[str, float]:
    sessions = session_factory(engine)
    batch: list[dict[str, Any]] = []
    canonical: list[bytes] = []
    with sessions() as session:
        for row in _chain_rows(count):
            canonical.append(canonical_bytes(row))
            batch.append(row)
            if len(batch) == 10_000:
                session.execute(insert(AuditEvent), batch)
                batch = []
        if batch:
            session.execute(insert(AuditEvent), batch)
        session.commit()
    with sessions() as session:
        read_snapshot(session)
        start = time.perf_counter()
        result = verify_chain(session, workers=WORKERS)
        elapsed = time.perf_counter() - start
    if not result.ok or result.events_checked != count:  # pragma: no cover - the benchmark's own check
        raise SystemExit(f"the benchmark chain did not verify: {result}")
    start = time.perf_counter()
    for data in canonical:
        hashlib.sha256(data).hexdigest()
    bare = time.perf_counter() - start
    return {"verify_per_s": count / elapsed, "bare_sha256_per_s": count / bare}


def run(events: int, chain: int, postgres: str | None) -> dict[str, Any]:
    figures: dict[str, Any] = {"benchmark": "audit", "append_events": events, "chain_events": chain}
    targets = [("sqlite", _sqlite())] + ([("postgresql", _postgres(postgres))] if postgres else [])
    for name, context in targets:
        with context as engine:
            for key, value in _append_and_added(engine, events).items():
                figures[f"{name}_{key}"] = value
        with _sqlite() if name == "sqlite" else _postgres(postgres or "") as engine:
            for key, value in _verify(engine, chain).items():
                figures[f"{name}_{key}"] = value
        figures[f"{name}_verify_over_bare_ratio"] = (
            figures[f"{name}_verify_per_s"] / figures[f"{name}_bare_sha256_per_s"]
        )
    return figures


def _table(figures: dict[str, Any]) -> str:
    lines = [
        f"audit log: {figures['append_events']:,} appends (one per transaction), "
        f"a {figures['chain_events']:,}-event chain",
        f"{'database':<12}{'append/s':>12}{'added (ms)':>12}{'verify/s':>12}{'bare sha256/s':>15}{'ratio':>8}",
    ]
    for name in ("sqlite", "postgresql"):
        if f"{name}_append_per_s" not in figures:
            continue
        lines.append(
            f"{name:<12}{figures[f'{name}_append_per_s']:>12,.0f}{figures[f'{name}_added_median_ms']:>12.3f}"
            f"{figures[f'{name}_verify_per_s']:>12,.0f}{figures[f'{name}_bare_sha256_per_s']:>15,.0f}"
            f"{figures[f'{name}_verify_over_bare_ratio']:>8.3f}"
        )
    lines.append("targets: verify >= 300,000 events/s; an event adds <= 1 ms median to a request")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2,000 appends and a 50,000-event chain")
    parser.add_argument("--postgres", default=os.environ.get("DATAPOORT_TEST_POSTGRES_URL"), help="PostgreSQL URL")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as a flat JSON object")
    arguments = parser.parse_args()
    events, chain = (2_000, 50_000) if arguments.quick else (20_000, 1_000_000)
    figures = run(events, chain, arguments.postgres)
    print(_table(figures))
    if arguments.json is not None:
        write_figures(arguments.json, figures)


if __name__ == "__main__":
    main()
