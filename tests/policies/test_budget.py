"""The budget ledger: sequential composition per period, never overspent."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.orm import Session, sessionmaker

from policies import budget, service
from policies.exceptions import BudgetExhausted
from policies.models import Grant
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
        left = budget.spend(
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


def test_a_query_that_failed_after_reading_is_charged_even_past_the_allowance(
    sessions: sessionmaker[Session], grant_id: int
) -> None:
    _spend(sessions, grant_id, 0.9)
    with sessions() as session:
        grant = session.get(Grant, grant_id)
        assert grant is not None
        left = budget.spend(
            session,
            grant,
            principal_id="ana",
            dataset="residents",
            epsilon=0.5,
            request_id="r",
            now=NOW,
            data_was_read=True,
        )
        session.commit()
        assert left == 0.0
        assert budget.remaining_epsilon(session, grant, "ana", "residents", NOW) == 0.0
    with pytest.raises(BudgetExhausted):
        _spend(sessions, grant_id, 0.01)
