"""The privacy-budget ledger under approximate (epsilon, delta)-DP with basic sequential composition.

Model: each aggregate grant allows ``epsilon_per_period`` (and ``delta_per_period``, which is 0 unless
the grant says otherwise) per calendar period (month or year, UTC) per principal and dataset; and each
dataset has a global cap per period across all principals, so that colluding principals cannot add up
their allowances beyond it. Under basic sequential composition the privacy loss of releases within a
period is at most (sum of epsilons, sum of deltas), so the ledger sums spends and refuses a query that
would take either sum past its limit. Most queries are pure epsilon-DP and spend delta 0; only a query
that releases data-dependent group keys (partition selection) spends delta.

Sums use ``math.fsum`` and the test is ``fsum(spent + [epsilon]) <= allowance`` (exactly rounded, no
tolerance), so ten spends of 0.1 fit an allowance of 1.0 and an eleventh does not.

A spend is *reserved* under a lock before the data is read (so concurrent queries can never together
pass the allowance, whatever happens to them afterwards) and *settled* as ``released`` or ``failed`` in
the transaction that writes the request's audit event. A reservation counts from the moment it is made;
it is handed back only when the audit event cannot be written, because then nothing but a 503 left.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session

from policies.exceptions import BudgetExhausted
from policies.models import BudgetSpend, Grant

PERIODS = ("month", "year")
RESERVED, RELEASED, FAILED = "reserved", "released", "failed"
SPEND_STATUSES = (RESERVED, RELEASED, FAILED)


@dataclass(frozen=True, slots=True)
class Allowance:
    epsilon: float
    period: str
    delta: float = 0.0


@dataclass(frozen=True, slots=True)
class Cost:
    """The privacy loss of one query: epsilon, and delta (0 for a pure epsilon-DP query)."""

    epsilon: float
    delta: float = 0.0


def period_of(budget_period: str, moment: datetime) -> str:
    if budget_period == "month":
        return moment.strftime("%Y-%m")
    if budget_period == "year":
        return moment.strftime("%Y")
    raise ValueError(f"unknown budget period {budget_period!r}")


def period_start(budget_period: str, moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    if budget_period == "month":
        return datetime(moment.year, moment.month, 1, tzinfo=UTC)
    if budget_period == "year":
        return datetime(moment.year, 1, 1, tzinfo=UTC)
    raise ValueError(f"unknown budget period {budget_period!r}")


def _lock_dataset(session: Session, dataset: str) -> None:
    """Serialise spends on one dataset across processes (PostgreSQL advisory lock; on SQLite every
    transaction already holds the write lock from ``BEGIN IMMEDIATE``). Per dataset, not per principal,
    because the dataset's global cap is shared by all principals."""
    if session.get_bind().dialect.name == "postgresql":
        digest = hashlib.sha256(f"budget\x00{dataset}".encode()).digest()
        key = int.from_bytes(digest[:8], "big", signed=True)
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def grant_allowance(grant: Grant) -> Allowance:
    if grant.epsilon_per_period is None or grant.budget_period is None:
        raise BudgetExhausted("this grant carries no privacy budget", remaining=0.0, requested=0.0)
    return Allowance(grant.epsilon_per_period, grant.budget_period, grant.delta_per_period or 0.0)


def _spends(
    session: Session, *, dataset: str, since: datetime, principal_id: str | None = None, grant_id: int | None = None
) -> list[tuple[float, float]]:
    statement = select(BudgetSpend.epsilon, BudgetSpend.delta).where(
        BudgetSpend.dataset == dataset, BudgetSpend.spent_at >= since
    )
    if principal_id is not None:
        statement = statement.where(BudgetSpend.principal_id == principal_id)
    if grant_id is not None:
        statement = statement.where(BudgetSpend.grant_id == grant_id)
    return [(float(epsilon), float(delta)) for epsilon, delta in session.execute(statement)]


@dataclass(frozen=True, slots=True)
class BudgetState:
    """What is left, for the principal under its grant and for the dataset as a whole."""

    principal_spent: float
    principal_allowance: Allowance
    dataset_spent: float
    dataset_allowance: Allowance | None
    principal_delta_spent: float = 0.0
    dataset_delta_spent: float = 0.0

    @property
    def principal_remaining(self) -> float:
        return max(self.principal_allowance.epsilon - self.principal_spent, 0.0)

    @property
    def dataset_remaining(self) -> float | None:
        if self.dataset_allowance is None:
            return None
        return max(self.dataset_allowance.epsilon - self.dataset_spent, 0.0)

    @property
    def remaining(self) -> float:
        dataset = self.dataset_remaining
        return self.principal_remaining if dataset is None else min(self.principal_remaining, dataset)

    @property
    def principal_delta_remaining(self) -> float:
        return max(self.principal_allowance.delta - self.principal_delta_spent, 0.0)

    @property
    def dataset_delta_remaining(self) -> float | None:
        if self.dataset_allowance is None:
            return None
        return max(self.dataset_allowance.delta - self.dataset_delta_spent, 0.0)

    @property
    def delta_remaining(self) -> float:
        dataset = self.dataset_delta_remaining
        mine = self.principal_delta_remaining
        return mine if dataset is None else min(mine, dataset)


@dataclass(frozen=True, slots=True)
class _Ledger:
    state: BudgetState
    mine: list[tuple[float, float]]
    everyone: list[tuple[float, float]]


def _column(spends: Sequence[tuple[float, float]], index: int) -> list[float]:
    return [spend[index] for spend in spends]


def _ledger(
    session: Session, grant: Grant, principal_id: str, dataset: str, now: datetime, cap: Allowance | None
) -> _Ledger:
    allowance = grant_allowance(grant)
    mine = _spends(
        session,
        dataset=dataset,
        since=period_start(allowance.period, now),
        principal_id=principal_id,
        grant_id=grant.id,
    )
    everyone = _spends(session, dataset=dataset, since=period_start(cap.period, now)) if cap is not None else []
    state = BudgetState(
        principal_spent=math.fsum(_column(mine, 0)),
        principal_allowance=allowance,
        dataset_spent=math.fsum(_column(everyone, 0)),
        dataset_allowance=cap,
        principal_delta_spent=math.fsum(_column(mine, 1)),
        dataset_delta_spent=math.fsum(_column(everyone, 1)),
    )
    return _Ledger(state, mine, everyone)


def budget_state(
    session: Session, grant: Grant, principal_id: str, dataset: str, now: datetime, cap: Allowance | None = None
) -> BudgetState:
    return _ledger(session, grant, principal_id, dataset, now, cap).state


def remaining_epsilon(
    session: Session, grant: Grant, principal_id: str, dataset: str, now: datetime, cap: Allowance | None = None
) -> float:
    return budget_state(session, grant, principal_id, dataset, now, cap).remaining


def _refuse(message: str, state: BudgetState, cost: Cost) -> BudgetExhausted:
    return BudgetExhausted(
        message,
        remaining=state.remaining,
        requested=cost.epsilon,
        delta_remaining=state.delta_remaining,
        delta_requested=cost.delta,
    )


def check_affordable(
    session: Session,
    grant: Grant,
    principal_id: str,
    dataset: str,
    epsilon: float,
    now: datetime,
    cap: Allowance | None = None,
    *,
    delta: float = 0.0,
) -> float:
    """Raise ``BudgetExhausted`` unless (``epsilon``, ``delta``) fits both the grant's allowance and the
    dataset's cap; return the epsilon left before it."""
    cost = Cost(epsilon, delta)
    ledger = _ledger(session, grant, principal_id, dataset, now, cap)
    state = ledger.state
    period = state.principal_allowance.period
    if math.fsum([*_column(ledger.mine, 0), epsilon]) > state.principal_allowance.epsilon:
        raise _refuse(
            f"this query costs epsilon {epsilon:g} but only {state.principal_remaining:g} is left for you "
            f"on {dataset!r} this {period}",
            state,
            cost,
        )
    if delta > 0 and math.fsum([*_column(ledger.mine, 1), delta]) > state.principal_allowance.delta:
        raise _refuse(
            f"this query costs delta {delta:g} (it selects group keys from the data) but only "
            f"{state.principal_delta_remaining:g} is left for you on {dataset!r} this {period}",
            state,
            cost,
        )
    if cap is not None and math.fsum([*_column(ledger.everyone, 0), epsilon]) > cap.epsilon:
        raise _refuse(
            f"this query costs epsilon {epsilon:g} but the dataset {dataset!r} has only "
            f"{state.dataset_remaining:g} left this {cap.period} across all users",
            state,
            cost,
        )
    if cap is not None and delta > 0 and math.fsum([*_column(ledger.everyone, 1), delta]) > cap.delta:
        raise _refuse(
            f"this query costs delta {delta:g} but the dataset {dataset!r} has only "
            f"{state.dataset_delta_remaining:g} left this {cap.period} across all users",
            state,
            cost,
        )
    return state.remaining


def spend(
    session: Session,
    grant: Grant,
    *,
    principal_id: str,
    dataset: str,
    epsilon: float,
    request_id: str,
    now: datetime,
    cap: Allowance | None = None,
    delta: float = 0.0,
    status: str = RELEASED,
) -> tuple[BudgetSpend, float]:
    """Check under a lock and record a spend in the caller's transaction; return it and the epsilon left.

    Concurrent requests cannot overspend: the check and the insert happen under the same lock (per
    dataset), and nothing is ever recorded past a limit. ``status=RESERVED`` is the step before the
    data is read; ``settle`` later marks the outcome.
    """
    if status not in SPEND_STATUSES:
        raise ValueError(f"unknown spend status {status!r}")
    allowance = grant_allowance(grant)
    _lock_dataset(session, dataset)
    left = check_affordable(session, grant, principal_id, dataset, epsilon, now, cap, delta=delta)
    entry = BudgetSpend(
        principal_id=principal_id,
        dataset=dataset,
        grant_id=grant.id,
        period=period_of(allowance.period, now),
        epsilon=epsilon,
        delta=delta,
        status=status,
        request_id=request_id,
        spent_at=now,
    )
    session.add(entry)
    session.flush()
    return entry, max(left - epsilon, 0.0)


def reserve(
    session: Session,
    grant: Grant,
    *,
    principal_id: str,
    dataset: str,
    epsilon: float,
    request_id: str,
    now: datetime,
    cap: Allowance | None = None,
    delta: float = 0.0,
) -> tuple[int, float]:
    """Reserve a query's cost before its data is read; return the ledger entry's id and the epsilon left.

    The caller commits the reservation before reading. From then on it counts against both limits, and
    it stays counted whatever happens to the query: a failure after the read may depend on the data."""
    entry, left = spend(
        session,
        grant,
        principal_id=principal_id,
        dataset=dataset,
        epsilon=epsilon,
        request_id=request_id,
        now=now,
        cap=cap,
        delta=delta,
        status=RESERVED,
    )
    return entry.id, left


def cancel(session: Session, spend_id: int) -> None:
    """Drop a reservation that is still ``reserved``, for a query whose answer never left because its
    audit event could not be written: the gateway answered 503 whatever the data, so nothing about the
    data was released. In the caller's (separate) transaction; if that fails too, the reservation stays
    and counts, which errs on the safe side."""
    session.execute(delete(BudgetSpend).where(BudgetSpend.id == spend_id, BudgetSpend.status == RESERVED))


def settle(session: Session, spend_id: int, outcome: str) -> None:
    """Mark a reservation ``released`` (an answer left) or ``failed`` (the query failed after the read),
    in the caller's transaction, which also writes the request's audit event. The amount never changes."""
    if outcome not in (RELEASED, FAILED):
        raise ValueError(f"a reservation settles as released or failed, not {outcome!r}")
    session.execute(
        update(BudgetSpend).where(BudgetSpend.id == spend_id, BudgetSpend.status == RESERVED).values(status=outcome)
    )


def usage(
    session: Session,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    principal_id: str | None = None,
    dataset: str | None = None,
) -> list[dict[str, object]]:
    """Privacy budget used per principal, dataset and period (reserved, released and failed alike: all
    of it counts), for the privacy officer's review."""
    columns = (BudgetSpend.principal_id, BudgetSpend.dataset, BudgetSpend.period)
    statement = select(*columns, func.sum(BudgetSpend.epsilon), func.sum(BudgetSpend.delta), func.count())
    if since is not None:
        statement = statement.where(BudgetSpend.spent_at >= since)
    if until is not None:
        statement = statement.where(BudgetSpend.spent_at < until)
    if principal_id is not None:
        statement = statement.where(BudgetSpend.principal_id == principal_id)
    if dataset is not None:
        statement = statement.where(BudgetSpend.dataset == dataset)
    statement = statement.group_by(*columns).order_by(*columns)
    return [
        {
            "principal_id": principal,
            "dataset": name,
            "period": period,
            "epsilon": float(epsilon or 0.0),
            "delta": float(delta or 0.0),
            "queries": int(count),
        }
        for principal, name, period, epsilon, delta, count in session.execute(statement)
    ]
