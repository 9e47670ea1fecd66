"""casbin over the state database.

The ``casbin_rule`` table is written by the policies service inside the caller's transaction (so a policy
change and its audit event commit together); casbin only reads it, through ``DatabaseAdapter``.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

import casbin
from casbin import persist
from casbin.util import key_match
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


_CACHE_LIMIT = 100_000
_MAX_ROLE_DEPTH = 9
"""casbin's default role manager follows at most this many role links: its ``max_hierarchy_level`` of 10
counts the subject itself as the first level (checked against casbin by the test suite)."""
DEFAULT_POLL_SECONDS = 1.0
"""How often a process asks the state database whether the policy changed. A change made by any process
is obeyed everywhere within this (plus one request): the 2-second bound of the design."""
# The model the index below implements; loading refuses any other, so the two cannot drift apart.
_MODEL_SHA256 = "068ede6a41f5bd3d81e3903b849827961cbdc34a4b6ba8b7e10f2ffe87d14bd5"

Decision = tuple[str, str, str, str, str]
_Rule = tuple[str, str, str]
"""(subject, dataset pattern, purpose) of one ``p`` line."""


class _Snapshot:
    """One loaded policy: the lines as casbin's model parses them, and an index that answers the model's
    matcher without casbin's linear scan (nor its role manager, which loading would build for nothing).

    The matcher is ``g(r.sub, p.sub, r.dom) && r.dom == p.dom && keyMatch(r.obj, p.obj) && r.act == p.act
    && (r.purpose == p.purpose || p.purpose == "*")`` with effect "some allow and no deny". The index
    files every ``p`` line under its exact (domain, action), so a decision looks only at those lines, and
    tests the subject against the request subject's roles (the ``g`` lines casbin parsed, followed
    transitively within the domain, as casbin's role manager does), the dataset with casbin's own
    ``key_match``, and the purpose. The test suite checks the
    index against ``casbin.Enforcer`` on generated requests. Decisions and role sets are cached (plain
    dicts: a racing writer can only store the same answer); the caches die with the snapshot when the
    policy changes, so nothing outlives a revocation.
    """

    def __init__(self, version: int, lines: list[str]) -> None:
        text = model_text()
        if hashlib.sha256(text.encode()).hexdigest() != _MODEL_SHA256:
            raise RuntimeError("casbin_model.conf changed: update the policy index in policies/enforcer.py with it")
        model = casbin.Model()
        model.load_model_from_text(text)
        _RulesAdapter(lines).load_policy(model)
        self.version = version
        self.allow: dict[tuple[str, str], list[_Rule]] = {}
        self.deny: dict[tuple[str, str], list[_Rule]] = {}
        for subject, domain, dataset, action, purpose, effect in model.get_policy("p", "p"):
            index = self.allow if effect == ALLOW else self.deny
            index.setdefault((domain, action), []).append((subject, dataset, purpose))
        # Role links per domain (``g, member, role, domain``), walked transitively for inherited roles.
        self.links: dict[tuple[str, str], list[str]] = {}
        for member, role, domain in model.get_policy("g", "g"):
            self.links.setdefault((member, domain), []).append(role)
        self.decisions: dict[Decision, bool] = {}
        self.roles: dict[tuple[str, str], frozenset[str]] = {}

    def allows(self, request: Decision) -> bool:
        decided = self.decisions.get(request)
        if decided is None:
            decided = self._decide(*request)
            if len(self.decisions) >= _CACHE_LIMIT:
                self.decisions.clear()
            self.decisions[request] = decided
        return decided

    def _decide(self, subject: str, domain: str, dataset: str, action: str, purpose: str) -> bool:
        subjects = self.roles_of(subject, domain) | {subject}

        def matches(rules: list[_Rule]) -> bool:
            return any(
                rule_subject in subjects and key_match(dataset, pattern) and (rule_purpose in (purpose, "*"))
                for rule_subject, pattern, rule_purpose in rules
            )

        key = (domain, action)
        return matches(self.allow.get(key, [])) and not matches(self.deny.get(key, []))

    def roles_of(self, subject: str, domain: str) -> frozenset[str]:
        key = (subject, domain)
        roles = self.roles.get(key)
        if roles is None:
            # Breadth first, at most ``_MAX_ROLE_DEPTH`` links deep: casbin's role manager stops there too.
            found: set[str] = set()
            level = [subject]
            for _ in range(_MAX_ROLE_DEPTH):
                level = [role for member in level for role in self.links.get((member, domain), ()) if role not in found]
                found.update(level)
                if not level:
                    break
            found.discard(subject)
            roles = frozenset(found)
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
        """Load the policy as ``session`` sees it. Never goes back: a transaction that began before the
        latest change (and so sees an older version) does not replace a newer snapshot."""
        snapshot = self._build(session)
        with self._lock:
            if snapshot.version >= self._snapshot.version:
                self._snapshot = snapshot
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
        return sorted(self._snapshot.roles_of(subject, domain))

    def role_names(self, principal_id: str, domain: str) -> list[str]:
        subjects = self.roles_of(principal_subject(principal_id), domain)
        return sorted(subject.removeprefix(ROLE_PREFIX) for subject in subjects)
