"""The privacy-budget ledger under pure epsilon-DP with sequential composition.

Model: each aggregate grant allows ``epsilon_per_period`` per calendar period (month or year, UTC) per
principal and dataset; and each dataset has a global cap per period across all principals, so that
colluding principals cannot add up their allowances beyond it. Under basic sequential composition the
privacy loss of releases within a period is at most the sum of the epsilons spent, so the ledger sums
spends and refuses a query that would take either sum past its limit. Sums use ``math.fsum`` and the
test is ``fsum(spent + [epsilon]) <= allowance`` (exactly rounded, no tolerance), so ten spends of 0.1
fit an allowance of 1.0 and an eleventh does not.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from policies.exceptions import BudgetExhausted
from policies.models import BudgetSpend, Grant

PERIODS = ("month", "year")


@dataclass(frozen=True, slots=True)
class Allowance:
    epsilon: float
    period: str


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
    return Allowance(grant.epsilon_per_period, grant.budget_period)


def _spends(
    session: Session, *, dataset: str, since: datetime, principal_id: str | None = None, grant_id: int | None = None
) -> list[float]:
    statement = select(BudgetSpend.epsilon).where(BudgetSpend.dataset == dataset, BudgetSpend.spent_at >= since)
    if principal_id is not None:
        statement = statement.where(BudgetSpend.principal_id == principal_id)
    if grant_id is not None:
        statement = statement.where(BudgetSpend.grant_id == grant_id)
    return list(session.scalars(statement))


@dataclass(frozen=True, slots=True)
class BudgetState:
    """What is left, for the principal under its grant and for the dataset as a whole."""

    principal_spent: float
    principal_allowance: Allowance
    dataset_spent: float
    dataset_allowance: Allowance | None

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


def _state(
    session: Session, grant: Grant, principal_id: str, dataset: str, now: datetime, cap: Allowance | None
) -> tuple[BudgetState, list[float], list[float]]:
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
        principal_spent=math.fsum(mine),
        principal_allowance=allowance,
        dataset_spent=math.fsum(everyone),
        dataset_allowance=cap,
    )
    return state, mine, everyone


def budget_state(
    session: Session, grant: Grant, principal_id: str, dataset: str, now: datetime, cap: Allowance | None = None
) -> BudgetState:
    return _state(session, grant, principal_id, dataset, now, cap)[0]


def remaining_epsilon(
    session: Session, grant: Grant, principal_id: str, dataset: str, now: datetime, cap: Allowance | None = None
) -> float:
    return budget_state(session, grant, principal_id, dataset, now, cap).remaining


def check_affordable(
    session: Session,
    grant: Grant,
    principal_id: str,
    dataset: str,
    epsilon: float,
    now: datetime,
    cap: Allowance | None = None,
) -> float:
    """Raise ``BudgetExhausted`` unless ``epsilon`` fits both the grant's allowance and the dataset's cap;
    return what is left before it."""
    state, mine, everyone = _state(session, grant, principal_id, dataset, now, cap)
    if math.fsum([*mine, epsilon]) > state.principal_allowance.epsilon:
        raise BudgetExhausted(
            f"this query costs epsilon {epsilon:g} but only {state.principal_remaining:g} is left for you "
            f"on {dataset!r} this {state.principal_allowance.period}",
            remaining=state.remaining,
            requested=epsilon,
        )
    if cap is not None and math.fsum([*everyone, epsilon]) > cap.epsilon:
        raise BudgetExhausted(
            f"this query costs epsilon {epsilon:g} but the dataset {dataset!r} has only "
            f"{state.dataset_remaining:g} left this {cap.period} across all users",
            remaining=state.remaining,
            requested=epsilon,
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
    data_was_read: bool = False,
) -> float:
    """Record a spend in the caller's transaction after re-checking under a lock; return what is left.

    Concurrent requests cannot overspend: the check and the insert happen under the same lock, and the
    caller commits the spend together with the audit event.

    ``data_was_read`` is for a query that failed after touching the data: its privacy loss may already
    have happened (an error can depend on the data), so it is recorded even past the limits, to keep
    the ledger true rather than tidy.
    """
    allowance = grant_allowance(grant)
    _lock_dataset(session, dataset)
    if data_was_read:
        left = remaining_epsilon(session, grant, principal_id, dataset, now, cap)
    else:
        left = check_affordable(session, grant, principal_id, dataset, epsilon, now, cap)
    session.add(
        BudgetSpend(
            principal_id=principal_id,
            dataset=dataset,
            grant_id=grant.id,
            period=period_of(allowance.period, now),
            epsilon=epsilon,
            request_id=request_id,
            spent_at=now,
        )
    )
    session.flush()
    return max(left - epsilon, 0.0)
