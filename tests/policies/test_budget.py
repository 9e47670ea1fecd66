"""The budget ledger: sequential composition per period, never overspent."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from policies import budget, service
from policies.exceptions import BudgetExhausted
from policies.models import BudgetSpend, Grant
from tests.factories import NOW, grant


@pytest.fixture
def grant_id(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        service.register_purpose(session, code="beleid", description="d", owner="o")
        service.create_principal(
            session, principal_id="ana", display_name="Ana", organisation="sd", kind="user", now=NOW
        )
        created = grant(session, subject="principal:ana", domain="sd", purpose="beleid")
        session.commit()
        return created.id


def _spend(sessions: sessionmaker[Session], grant_id: int, epsilon: float, now: datetime = NOW) -> float:
    with sessions() as session:
        grant = session.get(Grant, grant_id)
        assert grant is not None
        _, left = budget.spend(
            session, grant, principal_id="ana", dataset="residents", epsilon=epsilon, request_id="r", now=now
        )
        session.commit()
        return left


def test_spends_add_up_to_the_allowance_and_no_further(sessions: sessionmaker[Session], grant_id: int) -> None:
    for _ in range(10):
        _spend(sessions, grant_id, 0.1)
    with pytest.raises(BudgetExhausted) as refused:
        _spend(sessions, grant_id, 0.1)
    assert refused.value.remaining == pytest.approx(0.0, abs=1e-12)
    assert refused.value.requested == 0.1


def test_a_refused_spend_records_nothing(sessions: sessionmaker[Session], grant_id: int) -> None:
    _spend(sessions, grant_id, 0.75)
    with pytest.raises(BudgetExhausted) as refused:
        _spend(sessions, grant_id, 0.5)
    assert refused.value.remaining == pytest.approx(0.25)
    assert _spend(sessions, grant_id, 0.25) == pytest.approx(0.0)


def test_a_new_period_starts_afresh(sessions: sessionmaker[Session], grant_id: int) -> None:
    _spend(sessions, grant_id, 1.0)
    assert _spend(sessions, grant_id, 0.5, now=datetime(2026, 12, 1, tzinfo=UTC)) == pytest.approx(0.5)


def test_period_keys() -> None:
    assert budget.period_of("month", NOW) == "2026-11"
    assert budget.period_of("year", NOW) == "2026"
    with pytest.raises(ValueError, match="unknown budget period"):
        budget.period_of("week", NOW)


def _reserve(sessions: sessionmaker[Session], grant_id: int, epsilon: float, delta: float = 0.0) -> int:
    with sessions() as session:
        grant = session.get(Grant, grant_id)
        assert grant is not None
        spend_id, _ = budget.reserve(
            session,
            grant,
            principal_id="ana",
            dataset="residents",
            epsilon=epsilon,
            delta=delta,
            request_id="r",
            now=NOW,
            cap=budget.Allowance(50.0, "month", 1e-6),
        )
        session.commit()
        return spend_id


def _statuses(sessions: sessionmaker[Session]) -> list[str]:
    with sessions() as session:
        return list(session.scalars(select(BudgetSpend.status).order_by(BudgetSpend.id)))


def test_a_reservation_counts_at_once_and_settles_without_changing_its_amount(
    sessions: sessionmaker[Session], grant_id: int
) -> None:
    first = _reserve(sessions, grant_id, 0.6)
    with pytest.raises(BudgetExhausted):  # the reservation alone already leaves too little
        _reserve(sessions, grant_id, 0.6)
    with sessions() as session:
        budget.settle(session, first, budget.FAILED)
        session.commit()
        grant = session.get(Grant, grant_id)
        assert grant is not None
        assert budget.remaining_epsilon(session, grant, "ana", "residents", NOW) == pytest.approx(0.4)
    with sessions() as session:
        budget.settle(session, first, budget.RELEASED)  # a settled entry stays as it was settled
        session.commit()
    assert _statuses(sessions) == ["failed"]
    with sessions() as session, pytest.raises(ValueError, match="released or failed"):
        budget.settle(session, first, budget.RESERVED)


def test_delta_is_budgeted_like_epsilon(sessions: sessionmaker[Session], grant_id: int) -> None:
    with sessions() as session:
        grant = session.get(Grant, grant_id)
        assert grant is not None
        grant.delta_per_period = 3 * 2**-30
        session.commit()
    for _ in range(3):
        _reserve(sessions, grant_id, 0.01, delta=2**-30)
    with pytest.raises(BudgetExhausted) as refused:
        _reserve(sessions, grant_id, 0.01, delta=2**-30)
    assert refused.value.delta_requested == 2**-30
    assert refused.value.delta_remaining == pytest.approx(0.0, abs=1e-18)
    assert "delta" in refused.value.message
    _reserve(sessions, grant_id, 0.01)  # a pure epsilon query still fits


def test_a_grant_without_delta_allows_no_partition_selection(sessions: sessionmaker[Session], grant_id: int) -> None:
    with pytest.raises(BudgetExhausted, match="delta"):
        _reserve(sessions, grant_id, 0.01, delta=1e-12)


def test_the_dataset_cap_limits_delta_across_principals(sessions: sessionmaker[Session], grant_id: int) -> None:
    with sessions() as session:
        grant = session.get(Grant, grant_id)
        assert grant is not None
        grant.delta_per_period = 1.0e-3
        session.commit()
    _reserve(sessions, grant_id, 0.01, delta=1e-6)  # exactly the cap of 1e-6
    with pytest.raises(BudgetExhausted, match="across all users"):
        _reserve(sessions, grant_id, 0.01, delta=1e-12)
