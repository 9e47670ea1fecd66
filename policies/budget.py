"""The privacy-budget ledger under approximate (epsilon, delta)-DP with basic sequential composition.

Model: spends are counted per *privacy-unit space*, the datasets whose privacy units are the same persons
(or households, ...) as the catalog declares them; a dataset in no declared space is a space of its own.
A query on any dataset of a space is a mechanism on the same persons, so under basic sequential
composition a person's privacy loss is at most (sum of epsilons, sum of deltas) over every release on
every dataset of the space. The ledger therefore sums per space, and refuses a query that would take
any of these sums past its limit:

* the principal's allowance: ``epsilon_per_period`` (and ``delta_per_period``, 0 unless the grant says
  otherwise) of the grant the query is asked under, per calendar month or year (UTC), against all the
  principal spent in the space that period, under whichever grant and on whichever dataset of the space.
  A second grant in the space, or a revoked and re-issued one, adds no budget;
* each cap of the space, against everyone's spends in it since the cap's period began: the period cap
  (per month or year), so that colluding principals cannot add up their allowances past it, and the
  optional longer cap (per year or over the lifetime of the data), so that the period cap does not
  renew without bound.

Spaces are treated as unrelated persons: a spend in one never counts in another. That is only right when
their units are unrelated; datasets whose units overlap belong in one space, or a person's loss in both
adds up unseen. Most queries are pure epsilon-DP and spend delta 0; only a query that releases
data-dependent group keys (partition selection) spends delta.

Sums use ``math.fsum`` and the test is ``fsum(spent + [epsilon]) <= allowance`` (exactly rounded, no
tolerance), so ten spends of 0.1 fit an allowance of 1.0 and an eleventh does not.

A spend is *reserved* under a lock before the data is read (so concurrent queries can never together
pass the allowance, whatever happens to them afterwards) and *settled* as ``released`` or ``failed`` in
the transaction that writes the request's audit event. A reservation counts from the moment it is made;
it is handed back only when the audit event cannot be written, because then nothing but a 503 left.
"""

from __future__ import annotations

import decimal
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select, text, tuple_, update
from sqlalchemy.orm import Session

from policies.exceptions import BudgetExhausted
from policies.models import BudgetSpend, BudgetTotal, Grant

PERIODS = ("month", "year")
"""The periods of a grant's allowance."""
LIFETIME = "lifetime"
"""A cap's period besides month and year: a longer cap may bound the total over the lifetime of the data."""
RESERVED, RELEASED, FAILED = "reserved", "released", "failed"
SPEND_STATUSES = (RESERVED, RELEASED, FAILED)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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
    if budget_period == LIFETIME:
        return LIFETIME
    raise ValueError(f"unknown budget period {budget_period!r}")


def period_start(budget_period: str, moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    if budget_period == "month":
        return datetime(moment.year, moment.month, 1, tzinfo=UTC)
    if budget_period == "year":
        return datetime(moment.year, 1, 1, tzinfo=UTC)
    if budget_period == LIFETIME:
        return _EPOCH  # before any spend: every one counts
    raise ValueError(f"unknown budget period {budget_period!r}")


def _within(budget_period: str) -> str:
    return "in total" if budget_period == LIFETIME else f"this {budget_period}"


def _lock_space(session: Session, unit_space: str) -> None:
    """Serialise spends on one unit space across processes (PostgreSQL advisory lock; on SQLite every
    transaction already holds the write lock from ``BEGIN IMMEDIATE``). Per space, not per principal or
    dataset, because the space's caps are shared by all principals and all its datasets."""
    if session.get_bind().dialect.name == "postgresql":
        digest = hashlib.sha256(f"budget\x00{unit_space}".encode()).digest()
        key = int.from_bytes(digest[:8], "big", signed=True)
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def grant_allowance(grant: Grant) -> Allowance:
    if grant.epsilon_per_period is None or grant.budget_period is None:
        raise BudgetExhausted("this grant carries no privacy budget", remaining=0.0, requested=0.0)
    return Allowance(grant.epsilon_per_period, grant.budget_period, grant.delta_per_period or 0.0)


EVERYONE = "*"
"""The principal of the totals that count everyone's spends (the caps)."""
_EXACT = decimal.Context(prec=400)
"""Exact for sums of the epsilons and deltas a query can carry (binary floats of limited range)."""


def _exact(value: float) -> decimal.Decimal:
    return decimal.Decimal(value)  # the binary float's exact value


def _buckets(principal_id: str, moment: datetime) -> list[tuple[str, str]]:
    """The totals one spend adds to: the principal's month and year, everyone's month, year and lifetime."""
    month, year = period_of("month", moment), period_of("year", moment)
    return [(principal_id, month), (principal_id, year), (EVERYONE, month), (EVERYONE, year), (EVERYONE, LIFETIME)]


@dataclass(frozen=True, slots=True)
class _Total:
    epsilon: decimal.Decimal = decimal.Decimal(0)
    delta: decimal.Decimal = decimal.Decimal(0)


def _totals(session: Session, unit_space: str, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], _Total]:
    """The running totals of ``keys`` (principal or ``*``, period bucket): one indexed read."""
    rows = session.execute(
        select(BudgetTotal.principal_id, BudgetTotal.period, BudgetTotal.epsilon, BudgetTotal.delta).where(
            BudgetTotal.unit_space == unit_space,
            tuple_(BudgetTotal.principal_id, BudgetTotal.period).in_(list(dict.fromkeys(keys))),
        )
    )
    found = {
        (principal, period): _Total(decimal.Decimal(epsilon), decimal.Decimal(delta))
        for principal, period, epsilon, delta in rows
    }
    return {key: found.get(key, _Total()) for key in keys}


def _add(
    session: Session, unit_space: str, principal_id: str, moment: datetime, epsilon: float, delta: float, sign: int
) -> None:
    """Add (``sign`` 1) or take back (-1) one spend in every total it counts in; under the space's lock."""
    keys = _buckets(principal_id, moment)
    existing = {
        (row.principal_id, row.period): row
        for row in session.scalars(
            select(BudgetTotal).where(
                BudgetTotal.unit_space == unit_space,
                tuple_(BudgetTotal.principal_id, BudgetTotal.period).in_(keys),
            )
        )
    }
    # Exact both ways: even a negation rounds in the default context (28 digits).
    combine = _EXACT.add if sign > 0 else _EXACT.subtract
    for principal, period in keys:
        row = existing.get((principal, period))
        if row is None:
            row = BudgetTotal(
                unit_space=unit_space, principal_id=principal, period=period, epsilon="0", delta="0", spends=0
            )
            session.add(row)
        row.epsilon = str(combine(decimal.Decimal(row.epsilon), _exact(epsilon)))
        row.delta = str(combine(decimal.Decimal(row.delta), _exact(delta)))
        row.spends += sign
    session.flush()


def rebuild_totals(session: Session, unit_spaces: Sequence[str]) -> None:
    """Recompute the totals of these spaces from their ledger entries (after entries moved between
    spaces, or to fill the table the first time); in the caller's transaction, under the spaces' locks."""
    for unit_space in sorted(set(unit_spaces)):
        _lock_space(session, unit_space)
        session.execute(delete(BudgetTotal).where(BudgetTotal.unit_space == unit_space))
        sums: dict[tuple[str, str], list[decimal.Decimal]] = {}
        statement = select(
            BudgetSpend.principal_id, BudgetSpend.epsilon, BudgetSpend.delta, BudgetSpend.spent_at
        ).where(BudgetSpend.unit_space == unit_space)
        for principal_id, epsilon, delta, spent_at in session.execute(statement):
            for key in _buckets(principal_id, spent_at):
                total = sums.setdefault(key, [decimal.Decimal(0), decimal.Decimal(0), decimal.Decimal(0)])
                total[0] = _EXACT.add(total[0], _exact(float(epsilon)))
                total[1] = _EXACT.add(total[1], _exact(float(delta)))
                total[2] += 1
        session.add_all(
            BudgetTotal(
                unit_space=unit_space,
                principal_id=principal,
                period=period,
                epsilon=str(epsilon),
                delta=str(delta),
                spends=int(count),
            )
            for (principal, period), (epsilon, delta, count) in sums.items()
        )
        session.flush()


@dataclass(frozen=True, slots=True)
class CapState:
    """One cap of a unit space and what everyone together spent against it since its period began."""

    allowance: Allowance
    spent: float
    delta_spent: float = 0.0

    @property
    def period(self) -> str:
        return self.allowance.period

    @property
    def remaining(self) -> float:
        return max(self.allowance.epsilon - self.spent, 0.0)

    @property
    def delta_remaining(self) -> float:
        return max(self.allowance.delta - self.delta_spent, 0.0)


@dataclass(frozen=True, slots=True)
class BudgetState:
    """What is left in a unit space: for the principal under its grant's allowance, and under each of
    the space's caps for everyone together."""

    unit_space: str
    principal_allowance: Allowance
    principal_spent: float
    principal_delta_spent: float = 0.0
    caps: tuple[CapState, ...] = ()

    @property
    def principal_remaining(self) -> float:
        return max(self.principal_allowance.epsilon - self.principal_spent, 0.0)

    @property
    def principal_delta_remaining(self) -> float:
        return max(self.principal_allowance.delta - self.principal_delta_spent, 0.0)

    @property
    def space_remaining(self) -> float | None:
        """The least any cap leaves; ``None`` without caps."""
        return min((cap.remaining for cap in self.caps), default=None)

    @property
    def space_delta_remaining(self) -> float | None:
        return min((cap.delta_remaining for cap in self.caps), default=None)

    @property
    def remaining(self) -> float:
        space = self.space_remaining
        return self.principal_remaining if space is None else min(self.principal_remaining, space)

    @property
    def delta_remaining(self) -> float:
        space = self.space_delta_remaining
        mine = self.principal_delta_remaining
        return mine if space is None else min(mine, space)


@dataclass(frozen=True, slots=True)
class _Ledger:
    state: BudgetState
    mine: _Total
    everyone: tuple[_Total, ...]
    principal_id: str


def _ledger(
    session: Session, grant: Grant, principal_id: str, unit_space: str, caps: Sequence[Allowance], now: datetime
) -> _Ledger:
    allowance = grant_allowance(grant)
    mine_key = (principal_id, period_of(allowance.period, now))
    cap_keys = [(EVERYONE, period_of(cap.period, now)) for cap in caps]
    totals = _totals(session, unit_space, [mine_key, *cap_keys])
    mine, everyone = totals[mine_key], tuple(totals[key] for key in cap_keys)
    state = BudgetState(
        unit_space=unit_space,
        principal_allowance=allowance,
        principal_spent=float(mine.epsilon),
        principal_delta_spent=float(mine.delta),
        caps=tuple(
            CapState(cap, float(total.epsilon), float(total.delta)) for cap, total in zip(caps, everyone, strict=True)
        ),
    )
    return _Ledger(state, mine, everyone, principal_id)


def _with(total: decimal.Decimal, amount: float) -> float:
    """The total once ``amount`` counts, rounded once: what ``math.fsum`` of every spend would give."""
    return float(_EXACT.add(total, _exact(amount)))


def budget_state(
    session: Session,
    grant: Grant,
    *,
    principal_id: str,
    unit_space: str,
    caps: Sequence[Allowance],
    now: datetime,
) -> BudgetState:
    return _ledger(session, grant, principal_id, unit_space, caps, now).state


def remaining_epsilon(
    session: Session,
    grant: Grant,
    *,
    principal_id: str,
    unit_space: str,
    caps: Sequence[Allowance],
    now: datetime,
) -> float:
    return budget_state(session, grant, principal_id=principal_id, unit_space=unit_space, caps=caps, now=now).remaining


def _refuse(message: str, state: BudgetState, cost: Cost) -> BudgetExhausted:
    return BudgetExhausted(
        message,
        remaining=state.remaining,
        requested=cost.epsilon,
        delta_remaining=state.delta_remaining,
        delta_requested=cost.delta,
    )


def _for_you(session: Session, unit_space: str, dataset: str, principal_id: str, since: datetime) -> str:
    """Where the principal's allowance went: the space and the datasets of the principal's own spends
    in it (the query's among them), so a refusal on one dataset is explained by spends on another.
    Only the principal's own datasets: naming others' would show datasets it may not see. (Read only
    when refusing.)"""
    spent_on = session.scalars(
        select(BudgetSpend.dataset)
        .where(
            BudgetSpend.principal_id == principal_id,
            BudgetSpend.unit_space == unit_space,
            BudgetSpend.spent_at >= since,
        )
        .distinct()
    )
    datasets = sorted({dataset, *spent_on})
    if datasets == [unit_space]:
        return f"on {unit_space!r}"
    return f"in unit space {unit_space!r} (dataset{'s' if len(datasets) > 1 else ''} {', '.join(datasets)})"


def _the_space(unit_space: str, dataset: str) -> str:
    return f"the dataset {dataset!r}" if unit_space == dataset else f"the unit space {unit_space!r}"


def _check(session: Session, ledger: _Ledger, *, dataset: str, cost: Cost, now: datetime) -> None:
    state, unit_space = ledger.state, ledger.state.unit_space
    epsilon, delta = cost.epsilon, cost.delta
    allowance = state.principal_allowance

    def mine() -> str:
        since = period_start(allowance.period, now)
        return _for_you(session, unit_space, dataset, ledger.principal_id, since)

    if _with(ledger.mine.epsilon, epsilon) > allowance.epsilon:
        raise _refuse(
            f"this query costs epsilon {epsilon:g} but only {state.principal_remaining:g} is left for you "
            f"{mine()} {_within(allowance.period)}",
            state,
            cost,
        )
    if delta > 0 and _with(ledger.mine.delta, delta) > allowance.delta:
        raise _refuse(
            f"this query costs delta {delta:g} (it selects group keys from the data) but only "
            f"{state.principal_delta_remaining:g} is left for you {mine()} {_within(allowance.period)}",
            state,
            cost,
        )
    space = _the_space(unit_space, dataset)
    for cap, total in zip(state.caps, ledger.everyone, strict=True):
        if _with(total.epsilon, epsilon) > cap.allowance.epsilon:
            raise _refuse(
                f"this query costs epsilon {epsilon:g} but {space} has only {cap.remaining:g} left "
                f"{_within(cap.period)} across all users",
                state,
                cost,
            )
        if delta > 0 and _with(total.delta, delta) > cap.allowance.delta:
            raise _refuse(
                f"this query costs delta {delta:g} but {space} has only {cap.delta_remaining:g} left "
                f"{_within(cap.period)} across all users",
                state,
                cost,
            )


def check_affordable(
    session: Session,
    grant: Grant,
    *,
    principal_id: str,
    dataset: str,
    unit_space: str,
    caps: Sequence[Allowance],
    epsilon: float,
    now: datetime,
    delta: float = 0.0,
) -> float:
    """Raise ``BudgetExhausted`` unless (``epsilon``, ``delta``) on ``dataset`` fits both the grant's
    allowance and every cap of the dataset's unit space; return the epsilon left before it."""
    ledger = _ledger(session, grant, principal_id, unit_space, caps, now)
    _check(session, ledger, dataset=dataset, cost=Cost(epsilon, delta), now=now)
    return ledger.state.remaining


def _after(ledger: _Ledger, cost: Cost) -> BudgetState:
    """The state once the spend is recorded (it falls within every period that counts: it is now)."""
    state = ledger.state
    return BudgetState(
        unit_space=state.unit_space,
        principal_allowance=state.principal_allowance,
        principal_spent=_with(ledger.mine.epsilon, cost.epsilon),
        principal_delta_spent=_with(ledger.mine.delta, cost.delta),
        caps=tuple(
            CapState(cap.allowance, _with(total.epsilon, cost.epsilon), _with(total.delta, cost.delta))
            for cap, total in zip(state.caps, ledger.everyone, strict=True)
        ),
    )


def _record(
    session: Session,
    grant: Grant,
    *,
    principal_id: str,
    dataset: str,
    unit_space: str,
    caps: Sequence[Allowance],
    cost: Cost,
    request_id: str,
    now: datetime,
    status: str,
) -> tuple[BudgetSpend, BudgetState]:
    if status not in SPEND_STATUSES:
        raise ValueError(f"unknown spend status {status!r}")
    allowance = grant_allowance(grant)
    _lock_space(session, unit_space)
    ledger = _ledger(session, grant, principal_id, unit_space, caps, now)
    _check(session, ledger, dataset=dataset, cost=cost, now=now)
    entry = BudgetSpend(
        principal_id=principal_id,
        dataset=dataset,
        unit_space=unit_space,
        grant_id=grant.id,
        period=period_of(allowance.period, now),
        epsilon=cost.epsilon,
        delta=cost.delta,
        status=status,
        request_id=request_id,
        spent_at=now,
    )
    session.add(entry)
    session.flush()
    _add(session, unit_space, principal_id, now, cost.epsilon, cost.delta, 1)
    return entry, _after(ledger, cost)


def spend(
    session: Session,
    grant: Grant,
    *,
    principal_id: str,
    dataset: str,
    unit_space: str,
    caps: Sequence[Allowance],
    epsilon: float,
    request_id: str,
    now: datetime,
    delta: float = 0.0,
    status: str = RELEASED,
) -> tuple[BudgetSpend, float]:
    """Check under a lock and record a spend in the caller's transaction; return it and the epsilon left.

    Concurrent requests cannot overspend: the check and the insert happen under the same lock (per unit
    space), and nothing is ever recorded past a limit. ``status=RESERVED`` is the step before the data
    is read; ``settle`` later marks the outcome.
    """
    entry, after = _record(
        session,
        grant,
        principal_id=principal_id,
        dataset=dataset,
        unit_space=unit_space,
        caps=caps,
        cost=Cost(epsilon, delta),
        request_id=request_id,
        now=now,
        status=status,
    )
    return entry, after.remaining


def reserve(
    session: Session,
    grant: Grant,
    *,
    principal_id: str,
    dataset: str,
    unit_space: str,
    caps: Sequence[Allowance],
    epsilon: float,
    request_id: str,
    now: datetime,
    delta: float = 0.0,
) -> tuple[int, BudgetState]:
    """Reserve a query's cost before its data is read; return the ledger entry's id and what is left
    once it counts (for the answer's privacy report).

    The caller commits the reservation before reading. From then on it counts against every limit, and
    it stays counted whatever happens to the query: a failure after the read may depend on the data."""
    entry, after = _record(
        session,
        grant,
        principal_id=principal_id,
        dataset=dataset,
        unit_space=unit_space,
        caps=caps,
        cost=Cost(epsilon, delta),
        request_id=request_id,
        now=now,
        status=RESERVED,
    )
    return entry.id, after


def cancel(session: Session, spend_id: int) -> None:
    """Drop a reservation that is still ``reserved``, for a query whose answer never left because its
    audit event could not be written: the gateway answered 503 whatever the data, so nothing about the
    data was released. In the caller's (separate) transaction; if that fails too, the reservation stays
    and counts, which errs on the safe side."""
    entry = session.scalars(
        select(BudgetSpend).where(BudgetSpend.id == spend_id, BudgetSpend.status == RESERVED)
    ).one_or_none()
    if entry is None:
        return
    _lock_space(session, entry.unit_space)
    _add(session, entry.unit_space, entry.principal_id, entry.spent_at, entry.epsilon, entry.delta, -1)
    session.delete(entry)
    session.flush()


def settle(session: Session, spend_id: int, outcome: str) -> None:
    """Mark a reservation ``released`` (an answer left) or ``failed`` (the query failed after the read),
    in the caller's transaction, which also writes the request's audit event. The amount never changes."""
    if outcome not in (RELEASED, FAILED):
        raise ValueError(f"a reservation settles as released or failed, not {outcome!r}")
    session.execute(
        update(BudgetSpend).where(BudgetSpend.id == spend_id, BudgetSpend.status == RESERVED).values(status=outcome)
    )


def assign_unit_spaces(session: Session, spaces: Mapping[str, str]) -> int:
    """Move the ledger entries that still count against their own dataset (as the migration to unit
    spaces left every older entry) into the space ``spaces`` (dataset -> unit space, from the catalog)
    now puts that dataset in; return how many moved.

    Without it an upgrade would hand out fresh budget: what was spent on each dataset of a space before
    would not count against the space. In the caller's transaction, under each receiving space's lock
    (taken in name order), so no concurrent spend is checked against a half-moved ledger."""
    moved = 0
    for unit_space in sorted(set(spaces.values())):
        datasets = sorted(name for name, space in spaces.items() if space == unit_space and name != unit_space)
        if not datasets:
            continue
        _lock_space(session, unit_space)
        result = session.execute(
            update(BudgetSpend)
            .where(BudgetSpend.dataset.in_(datasets), BudgetSpend.unit_space == BudgetSpend.dataset)
            .values(unit_space=unit_space)
            .execution_options(synchronize_session=False)
        )
        count = cast(CursorResult[Any], result).rowcount
        if count:
            rebuild_totals(session, [unit_space, *datasets])
        moved += count
    return moved


def usage(
    session: Session,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    principal_id: str | None = None,
    unit_space: str | None = None,
    dataset: str | None = None,
) -> list[dict[str, object]]:
    """Privacy budget used per principal, unit space, dataset and period (reserved, released and failed
    alike: all of it counts), for the privacy officer's review. A principal's rows of one space and
    period add up to what counts against its allowance there."""
    columns = (BudgetSpend.principal_id, BudgetSpend.unit_space, BudgetSpend.dataset, BudgetSpend.period)
    statement = select(*columns, func.sum(BudgetSpend.epsilon), func.sum(BudgetSpend.delta), func.count())
    if since is not None:
        statement = statement.where(BudgetSpend.spent_at >= since)
    if until is not None:
        statement = statement.where(BudgetSpend.spent_at < until)
    if principal_id is not None:
        statement = statement.where(BudgetSpend.principal_id == principal_id)
    if unit_space is not None:
        statement = statement.where(BudgetSpend.unit_space == unit_space)
    if dataset is not None:
        statement = statement.where(BudgetSpend.dataset == dataset)
    statement = statement.group_by(*columns).order_by(*columns)
    return [
        {
            "principal_id": principal,
            "unit_space": space,
            "dataset": name,
            "period": period,
            "epsilon": float(epsilon or 0.0),
            "delta": float(delta or 0.0),
            "queries": int(count),
        }
        for principal, space, name, period, epsilon, delta, count in session.execute(statement)
    ]


@dataclass(frozen=True, slots=True)
class SpendPoint:
    spent_at: datetime
    principal_id: str
    unit_space: str
    dataset: str
    epsilon: float


def spends_between(
    session: Session, *, since: datetime, until: datetime, unit_space: str | None = None
) -> Iterator[SpendPoint]:
    """Every ledger entry in ``[since, until)``, oldest first (reserved, released and failed alike: all of
    it counts), streamed, for the privacy officer's charts of budget use over time."""
    statement = select(
        BudgetSpend.spent_at, BudgetSpend.principal_id, BudgetSpend.unit_space, BudgetSpend.dataset, BudgetSpend.epsilon
    ).where(BudgetSpend.spent_at >= since, BudgetSpend.spent_at < until)
    if unit_space is not None:
        statement = statement.where(BudgetSpend.unit_space == unit_space)
    result = session.execute(statement.order_by(BudgetSpend.spent_at, BudgetSpend.id).execution_options(yield_per=5000))
    for spent_at, principal, space, dataset, epsilon in result:
        yield SpendPoint(spent_at, principal, space, dataset, float(epsilon))
