"""casbin over the state database.

The ``casbin_rule`` table is written by the policies service inside the caller's transaction (so a policy
change and its audit event commit together); casbin only reads it, through ``DatabaseAdapter``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

import casbin
from casbin import persist
from casbin.model.model_fast import FastModel
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


# The request fields casbin's FastEnforcer indexes policies by: domain and action, both matched exactly
# (subjects go through roles, datasets through patterns and purposes through "*", so they cannot be).
_INDEX = (1, 3)
_CACHE_LIMIT = 100_000
DEFAULT_POLL_SECONDS = 1.0
"""How often a process asks the state database whether the policy changed. A change made by any process
is obeyed everywhere within this (plus one request): the 2-second bound of the design."""

Decision = tuple[str, str, str, str, str]


class _Snapshot:
    """One loaded policy: an indexed casbin enforcer and the decisions taken on it.

    casbin's FastEnforcer narrows the policy to the request's (domain, action) by mutating shared state
    while it enforces, so enforcement is serialised by a lock; a decision is cached once taken, and the
    cache dies with the snapshot when the policy changes, so nothing outlives a revocation."""

    def __init__(self, version: int, lines: list[str]) -> None:
        model = FastModel(_INDEX)
        model.load_model_from_text(model_text())
        enforcer = casbin.FastEnforcer(model, _RulesAdapter(lines), cache_key_order=_INDEX)
        self.version = version
        self.enforcer = enforcer
        self.lock = threading.Lock()
        self.decisions: dict[Decision, bool] = {}
        self.roles: dict[tuple[str, str], tuple[str, ...]] = {}

    def allows(self, request: Decision) -> bool:
        decided = self.decisions.get(request)
        if decided is not None:
            return decided
        with self.lock:
            decided = bool(self.enforcer.enforce(*request))
            if len(self.decisions) >= _CACHE_LIMIT:
                self.decisions.clear()
            self.decisions[request] = decided
        return decided

    def roles_of(self, subject: str, domain: str) -> tuple[str, ...]:
        key = (subject, domain)
        roles = self.roles.get(key)
        if roles is None:
            with self.lock:
                roles = tuple(self.enforcer.get_implicit_roles_for_user(subject, domain))
                self.roles[key] = roles
        return roles


class PolicyEngine:
    """Holds the current policy snapshot and swaps in a fresh one when the policy version changes.

    Swapping a fully built snapshot (rather than mutating one) means a request never sees a half-loaded
    policy; the lock only keeps two reloads from racing each other. Version and rules are read in the
    caller's session, in one transaction, so they belong together; and no second connection is opened,
    which on SQLite would wait forever for the write lock the caller's own transaction holds.

    The version is read at most every ``poll_seconds`` (0: before every decision). A change made through
    this process calls ``mark_stale`` so that the next decision here reads it at once.
    """

    def __init__(self, session_factory: Callable[[], Session], *, poll_seconds: float = DEFAULT_POLL_SECONDS) -> None:
        self._lock = threading.Lock()
        self._poll_seconds = poll_seconds
        with session_factory() as session:
            self._snapshot = self._build(session)
        self._checked_at = time.monotonic()

    @staticmethod
    def _build(session: Session) -> _Snapshot:
        return _Snapshot(current_version(session), _rule_lines(session))

    @property
    def version(self) -> int:
        return self._snapshot.version

    def reload(self, session: Session) -> None:
        with self._lock:
            self._snapshot = self._build(session)
            self._checked_at = time.monotonic()

    def mark_stale(self) -> None:
        self._checked_at = -math.inf

    def ensure_current(self, session: Session) -> None:
        """Reload if another transaction (in any process) has changed the policy since the last load;
        asks the database at most every ``poll_seconds``."""
        now = time.monotonic()
        if now - self._checked_at < self._poll_seconds:
            return
        if current_version(session) != self._snapshot.version:
            self.reload(session)
        else:
            self._checked_at = now

    def allows(self, subject: str, domain: str, dataset: str, action: str, purpose: str) -> bool:
        return self._snapshot.allows((subject, domain, dataset, action, purpose))

    def roles_of(self, subject: str, domain: str) -> list[str]:
        """The role subjects (``role:...``) of ``subject`` in ``domain``, inherited ones included."""
        return list(self._snapshot.roles_of(subject, domain))

    def role_names(self, principal_id: str, domain: str) -> list[str]:
        subjects = self.roles_of(principal_subject(principal_id), domain)
        return sorted(subject.removeprefix(ROLE_PREFIX) for subject in subjects)
