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
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from policies.models import CasbinRule, PolicyVersion

ACTIONS = ("aggregate", "export", "reidentify", "audit:read", "admin")
ALLOW = "allow"
DENY = "deny"
# casbin subjects carry their kind, so a principal whose id happens to equal a role's name never
# inherits that role's grants (casbin treats g(x, x, domain) as true).
PRINCIPAL_PREFIX = "principal:"
ROLE_PREFIX = "role:"


def principal_subject(principal_id: str) -> str:
    return PRINCIPAL_PREFIX + principal_id


def role_subject(role: str) -> str:
    return ROLE_PREFIX + role


def current_version(session: Session) -> int:
    version = session.scalar(select(PolicyVersion.version).where(PolicyVersion.id == 1))
    return int(version or 0)


def bump_version(session: Session) -> None:
    """Mark the policy as changed, in the caller's transaction."""
    session.execute(update(PolicyVersion).where(PolicyVersion.id == 1).values(version=PolicyVersion.version + 1))


def model_text() -> str:
    return resources.files("policies").joinpath("casbin_model.conf").read_text()


class _RulesAdapter(persist.Adapter):  # type: ignore[misc]
    """Hands casbin the rule lines that were read from ``casbin_rule``. Reading happens in the caller's
    session (see ``PolicyEngine.reload``); writes go through the policies service, never through casbin."""

    def __init__(self, lines: list[str]) -> None:
        self._lines = lines

    def load_policy(self, model: Any) -> None:
        for line in self._lines:
            persist.load_policy_line(line, model)


def _rule_lines(session: Session) -> list[str]:
    lines = []
    for rule in session.scalars(select(CasbinRule).order_by(CasbinRule.id)):
        values = [v for v in (rule.v0, rule.v1, rule.v2, rule.v3, rule.v4, rule.v5) if v is not None]
        lines.append(", ".join([rule.ptype, *values]))
    return lines


class PolicyEngine:
    """Holds the current casbin enforcer and swaps in a fresh one when the policy version changes.

    Swapping a fully built enforcer (rather than mutating one) means a request never sees a half-loaded
    policy; the lock only keeps two reloads from racing each other. Version and rules are read in the
    caller's session, in one transaction, so they belong together; and no second connection is opened,
    which on SQLite would wait forever for the write lock the caller's own transaction holds.
    """

    def __init__(self, session_factory: Callable[[], Session]) -> None:
        self._lock = threading.Lock()
        with session_factory() as session:
            self._version, self._enforcer = self._build(session)

    @staticmethod
    def _build(session: Session) -> tuple[int, casbin.Enforcer]:
        version = current_version(session)
        model = casbin.Model()
        model.load_model_from_text(model_text())
        return version, casbin.Enforcer(model, _RulesAdapter(_rule_lines(session)))

    def reload(self, session: Session) -> None:
        with self._lock:
            self._version, self._enforcer = self._build(session)

    def ensure_current(self, session: Session) -> None:
        """Reload if another transaction (in any process) has changed the policy since the last load."""
        if current_version(session) != self._version:
            self.reload(session)

    def allows(self, subject: str, domain: str, dataset: str, action: str, purpose: str) -> bool:
        return bool(self._enforcer.enforce(subject, domain, dataset, action, purpose))

    def roles_of(self, subject: str, domain: str) -> list[str]:
        """The role subjects (``role:...``) of ``subject`` in ``domain``, inherited ones included."""
        return list(self._enforcer.get_implicit_roles_for_user(subject, domain))

    def role_names(self, principal_id: str, domain: str) -> list[str]:
        subjects = self.roles_of(principal_subject(principal_id), domain)
        return sorted(subject.removeprefix(ROLE_PREFIX) for subject in subjects)
