"""Builders for test state: one place for the defaults, so each test states only what it is about."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from policies import service
from policies.models import Grant

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

GRANT_DEFAULTS: dict[str, Any] = {
    "subject": "role:analist",
    "domain": "sociaal-domein",
    "dataset": "residents",
    "action": "aggregate",
    "purpose": "beleidsinformatie",
    "legal_basis": "public_task",
    "legal_basis_text": "Gemeentewet art. 160",
    "now": NOW,
    "epsilon_per_period": 1.0,
    "budget_period": "month",
}


def grant_arguments(**overrides: Any) -> dict[str, Any]:
    arguments = {**GRANT_DEFAULTS, **overrides}
    if arguments["action"] != "aggregate":  # only aggregate grants carry a budget
        for budget in ("epsilon_per_period", "budget_period"):
            if budget not in overrides:
                arguments.pop(budget)
    return arguments


def grant(session: Session, **overrides: Any) -> Grant:
    return service.create_grant(session, **grant_arguments(**overrides))
