"""The privacy-budget ledger under pure epsilon-DP with sequential composition.

Model: each aggregate grant allows ``epsilon_per_period`` per calendar period (month or year, UTC) per
principal and dataset. Under basic sequential composition the total privacy loss of a principal's
releases on a dataset within one period is at most the sum of the epsilons spent, so the ledger sums
spends and refuses any query that would take the sum past the allowance. Sums use ``math.fsum`` and are
compared without tolerance, so rounding never lets a spend through.
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from policies.exceptions import BudgetExhausted
from policies.models import BudgetSpend, Grant


def period_of(budget_period: str, moment: datetime) -> str:
    if budget_period == "month":
        return moment.strftime("%Y-%m")
    if budget_period == "year":
        return moment.strftime("%Y")
    raise ValueError(f"unknown budget period {budget_period!r}")


def _lock_ledger(session: Session, principal_id: str, dataset: str) -> None:
    """Serialise spends of one principal on one dataset across processes (PostgreSQL advisory lock;
    on SQLite every transaction already holds the write lock from ``BEGIN IMMEDIATE``)."""
    if session.get_bind().dialect.name == "postgresql":
        digest = hashlib.sha256(f"budget\x00{principal_id}\x00{dataset}".encode()).digest()
        key = int.from_bytes(digest[:8], "big", signed=True)
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _allowance(grant: Grant) -> tuple[float, str]:
    if grant.epsilon_per_period is None or grant.budget_period is None:
        raise BudgetExhausted("this grant carries no privacy budget", remaining=0.0, requested=0.0)
    return grant.epsilon_per_period, grant.budget_period


def _spent(session: Session, grant: Grant, principal_id: str, dataset: str, now: datetime) -> list[float]:
    _, budget_period = _allowance(grant)
    return list(
        session.scalars(
            select(BudgetSpend.epsilon).where(
                BudgetSpend.principal_id == principal_id,
                BudgetSpend.dataset == dataset,
                BudgetSpend.grant_id == grant.id,
                BudgetSpend.period == period_of(budget_period, now),
            )
        )
    )


def remaining_epsilon(session: Session, grant: Grant, principal_id: str, dataset: str, now: datetime) -> float:
    allowance, _ = _allowance(grant)
    return max(allowance - math.fsum(_spent(session, grant, principal_id, dataset, now)), 0.0)


def check_affordable(
    session: Session, grant: Grant, principal_id: str, dataset: str, epsilon: float, now: datetime
) -> float:
    """Raise ``BudgetExhausted`` unless ``epsilon`` fits in what is left; return what is left before it.

    The test is ``fsum(spent + [epsilon]) <= allowance``, an exactly rounded sum, rather than a
    subtraction, so that ten spends of 0.1 fit an allowance of 1.0 and an eleventh does not.
    """
    allowance, _ = _allowance(grant)
    spent = _spent(session, grant, principal_id, dataset, now)
    left = max(allowance - math.fsum(spent), 0.0)
    if math.fsum([*spent, epsilon]) > allowance:
        raise BudgetExhausted(
            f"this query costs epsilon {epsilon:g} but only {left:g} is left for {dataset!r} this period",
            remaining=left,
            requested=epsilon,
        )
    return left


def spend(
    session: Session,
    grant: Grant,
    *,
    principal_id: str,
    dataset: str,
    epsilon: float,
    request_id: str,
    now: datetime,
    data_was_read: bool = False,
) -> float:
    """Record a spend in the caller's transaction after re-checking under a lock; return what is left.

    Concurrent requests cannot overspend: the check and the insert happen under the same lock, and the
    caller commits the spend together with the audit event.

    ``data_was_read`` is for a query that failed after touching the data: its privacy loss may already
    have happened (an error can depend on the data), so it is recorded even past the allowance, to keep
    the ledger true rather than tidy.
    """
    _, budget_period = _allowance(grant)
    _lock_ledger(session, principal_id, dataset)
    if data_was_read:
        left = remaining_epsilon(session, grant, principal_id, dataset, now)
    else:
        left = check_affordable(session, grant, principal_id, dataset, epsilon, now)
    session.add(
        BudgetSpend(
            principal_id=principal_id,
            dataset=dataset,
            grant_id=grant.id,
            period=period_of(budget_period, now),
            epsilon=epsilon,
            request_id=request_id,
            spent_at=now,
        )
    )
    session.flush()
    return max(left - epsilon, 0.0)
