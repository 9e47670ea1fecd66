"""casbin over the state database.

The ``casbin_rule`` table is written by the policies service inside the caller's transaction (so a policy
change and its audit event commit together); casbin only reads it, through ``DatabaseAdapter``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from importlib import resources
from typing import Any

import casbin
from casbin import persist
from sqlalchemy import select
from sqlalchemy.orm import Session

from policies.models import CasbinRule

ACTIONS = ("aggregate", "export", "reidentify", "audit:read", "admin")
ALLOW = "allow"
DENY = "deny"


def model_text() -> str:
    return resources.files("policies").joinpath("casbin_model.conf").read_text()


class DatabaseAdapter(persist.Adapter):  # type: ignore[misc]
    """Loads casbin lines from ``casbin_rule``. Writes go through the service, never through casbin."""

    def __init__(self, session_factory: Callable[[], Session]) -> None:
        self._session_factory = session_factory

    def load_policy(self, model: Any) -> None:
        with self._session_factory() as session:
            for rule in session.scalars(select(CasbinRule).order_by(CasbinRule.id)):
                values = [v for v in (rule.v0, rule.v1, rule.v2, rule.v3, rule.v4, rule.v5) if v is not None]
                persist.load_policy_line(", ".join([rule.ptype, *values]), model)


class PolicyEngine:
    """Holds the current casbin enforcer and swaps in a fresh one on ``reload``.

    Swapping a fully built enforcer (rather than mutating one) means a request never sees a half-loaded
    policy; the lock only keeps two reloads from racing each other.
    """

    def __init__(self, session_factory: Callable[[], Session]) -> None:
        self._adapter = DatabaseAdapter(session_factory)
        self._lock = threading.Lock()
        self._enforcer = self._build()

    def _build(self) -> casbin.Enforcer:
        model = casbin.Model()
        model.load_model_from_text(model_text())
        return casbin.Enforcer(model, self._adapter)

    def reload(self) -> None:
        with self._lock:
            self._enforcer = self._build()

    def allows(self, subject: str, domain: str, dataset: str, action: str, purpose: str) -> bool:
        return bool(self._enforcer.enforce(subject, domain, dataset, action, purpose))

    def roles_of(self, subject: str, domain: str) -> list[str]:
        return list(self._enforcer.get_roles_for_user_in_domain(subject, domain))
