"""Identities, grants and authorisation decisions. Functions here never commit: the caller's transaction
decides, so a change and its audit event land together."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from policies import api_keys
from policies.budget import PERIODS
from policies.enforcer import (
    ACTIONS,
    ALLOW,
    DENY,
    PRINCIPAL_PREFIX,
    ROLE_PREFIX,
    PolicyEngine,
    bump_version,
    principal_subject,
    role_subject,
)
from policies.exceptions import AuthenticationFailed, PolicyConflict, PolicyDenied
from policies.models import ApiKey, CasbinRule, Grant, Organisation, Principal, Purpose

# AVG art. 6(1) (a)-(f).
LEGAL_BASES = {
    "consent": "art. 6(1)(a) toestemming",
    "contract": "art. 6(1)(b) overeenkomst",
    "legal_obligation": "art. 6(1)(c) wettelijke verplichting",
    "vital_interest": "art. 6(1)(d) vitaal belang",
    "public_task": "art. 6(1)(e) publieke taak / openbaar gezag",
    "legitimate_interest": "art. 6(1)(f) gerechtvaardigd belang",
}

# casbin lines are comma-separated text; identifiers are kept to a safe alphabet so no value can
# smuggle in a separator or a matcher expression.
_IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")
_OBJECT_PATTERN = re.compile(r"^(\*|[A-Za-z0-9][A-Za-z0-9_.\-]{0,126}\*?)$")


DEFAULT_K_ANONYMITY = 10
MIN_K_ANONYMITY = 2
"""k = 1 would be no protection at all; a grant that means it must say so some other way."""
MAX_K_ANONYMITY = 10_000


def check_identifier(kind: str, value: str) -> None:
    if not _IDENTIFIER.fullmatch(value):
        raise PolicyConflict(f"{kind} {value!r} must be 1-128 letters, digits or _ . : -")


def _check_subject(subject: str) -> None:
    """A grant's subject is ``principal:<id>`` or ``role:<name>`` (see ``policies.enforcer``)."""
    if len(subject) > 128:
        raise PolicyConflict("a subject has at most 128 characters")
    for prefix in (PRINCIPAL_PREFIX, ROLE_PREFIX):
        if subject.startswith(prefix):
            check_identifier("subject", subject.removeprefix(prefix))
            return
    raise PolicyConflict(f"subject {subject!r} must be 'principal:<id>' or 'role:<name>'")


def _check_rule_target(domain: str, dataset: str, action: str) -> None:
    check_identifier("domain", domain)
    if not _OBJECT_PATTERN.fullmatch(dataset):
        raise PolicyConflict(f"dataset pattern {dataset!r} is not a name or a name ending in *")
    if action not in ACTIONS:
        raise PolicyConflict(f"action {action!r} is not one of {', '.join(ACTIONS)}")


@dataclass(frozen=True, slots=True)
class AuthenticatedPrincipal:
    id: str
    organisation: str
    kind: str
    key_id: str | None
    """The API key it authenticated with; ``None`` for a bearer token from the identity provider."""


REGISTER_TARGET = "register"
"""The admin target for what belongs to no organisation: the organisations and the purpose register."""
AUDIT_LOG_TARGET = "audit"
"""The oversight target for the audit log itself."""
RESERVED_TARGETS = frozenset({REGISTER_TARGET, AUDIT_LOG_TARGET, "*"})
"""Admin and oversight targets that are not organisations; no organisation may take these names."""

PRINCIPAL_KINDS = ("user", "partner", "service")
OIDC_PRINCIPAL_PREFIX = "oidc:"
"""Principals named ``oidc:...`` belong to the identity provider's users; nobody else may create one."""


def create_principal(
    session: Session,
    *,
    principal_id: str,
    display_name: str,
    organisation: str,
    kind: str,
    now: datetime,
    from_token: bool = False,
) -> Principal:
    check_identifier("principal id", principal_id)
    if principal_id.startswith(OIDC_PRINCIPAL_PREFIX) != from_token:
        raise PolicyConflict(f"principal ids starting with {OIDC_PRINCIPAL_PREFIX!r} are reserved for token users")
    if kind not in PRINCIPAL_KINDS:
        raise PolicyConflict(f"kind {kind!r} is not one of {', '.join(PRINCIPAL_KINDS)}")
    if not 0 < len(display_name) <= 256:
        raise PolicyConflict("a display name has 1 to 256 characters")
    check_identifier("organisation", organisation)
    if session.get(Principal, principal_id) is not None:
        raise PolicyConflict(f"principal {principal_id!r} already exists")
    registered = session.get(Organisation, organisation)
    if registered is None and organisation in RESERVED_TARGETS:
        raise PolicyConflict(f"{organisation!r} names a Datapoort object, not an organisation")
    if registered is None:
        # An organisation is registered with its first principal; ``management`` can name it properly.
        session.add(Organisation(id=organisation, display_name=organisation, created_at=now))
    elif registered.disabled_at is not None:
        raise PolicyConflict(f"organisation {organisation!r} is disabled")
    principal = Principal(
        id=principal_id, display_name=display_name, organisation=organisation, kind=kind, created_at=now
    )
    session.add(principal)
    session.flush()
    return principal


def issue_key(
    session: Session, *, principal_id: str, now: datetime, label: str | None = None, expires_at: datetime | None = None
) -> api_keys.NewKey:
    if session.get(Principal, principal_id) is None:
        raise PolicyConflict(f"principal {principal_id!r} does not exist")
    new = api_keys.generate_key()
    session.add(
        ApiKey(
            id=new.key_id,
            principal_id=principal_id,
            secret_sha256=new.secret_sha256,
            label=label,
            created_at=now,
            expires_at=expires_at,
        )
    )
    session.flush()
    return new


def authenticate_key(session: Session, token: str, *, now: datetime) -> AuthenticatedPrincipal:
    """Resolve a presented API key to its principal (see ``record_key_use`` for its last-used time).

    Unknown, malformed, wrong, expired and revoked keys all fail the same way, so a caller learns nothing
    about which keys exist.
    """
    parsed = api_keys.parse_key(token)
    if parsed is None:
        raise AuthenticationFailed("the API key is not a well-formed Datapoort key")
    key = session.get(ApiKey, parsed.key_id)
    # Always compare, even for an unknown id, so that timing does not reveal which ids exist.
    matches = api_keys.secret_matches(parsed.secret, key.secret_sha256 if key is not None else None)
    if key is None or not matches:
        raise AuthenticationFailed("the API key is not valid")
    if key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
        raise AuthenticationFailed("the API key is not valid")
    principal = session.get(Principal, key.principal_id)
    if principal is None or not is_active(session, principal):
        raise AuthenticationFailed("the API key is not valid")
    return AuthenticatedPrincipal(
        id=principal.id, organisation=principal.organisation, kind=principal.kind, key_id=key.id
    )


def is_active(session: Session, principal: Principal) -> bool:
    """Neither the principal nor its organisation is disabled."""
    if principal.disabled_at is not None:
        return False
    organisation = session.get(Organisation, principal.organisation)
    return organisation is None or organisation.disabled_at is None


def record_key_use(session: Session, key_id: str, now: datetime) -> None:
    """Note when a key was last used, in the caller's transaction (the one that writes the request's
    audit event, so reading keys and grants stays a read-only transaction)."""
    session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now))


def assign_role(session: Session, *, principal_id: str, role: str, domain: str) -> None:
    check_identifier("role", role)
    check_identifier("domain", domain)
    session.add(CasbinRule(ptype="g", v0=principal_subject(principal_id), v1=role_subject(role), v2=domain))
    bump_version(session)
    session.flush()


def inherit_role(session: Session, *, role: str, parent: str, domain: str) -> None:
    """Members of ``role`` in ``domain`` also hold every grant of ``parent`` there (and of its parents)."""
    check_identifier("role", role)
    check_identifier("role", parent)
    check_identifier("domain", domain)
    if role == parent:
        raise PolicyConflict(f"role {role!r} cannot inherit from itself")
    session.add(CasbinRule(ptype="g", v0=role_subject(role), v1=role_subject(parent), v2=domain))
    bump_version(session)
    session.flush()


def register_uri(session: Session, purpose: str) -> str | None:
    """The purpose's entry in the register of processing activities, if it is registered and has one."""
    registered = session.get(Purpose, purpose[:128])
    return registered.register_uri if registered is not None else None


def register_purpose(
    session: Session, *, code: str, description: str, owner: str, register_uri: str | None = None
) -> Purpose:
    check_identifier("purpose", code)
    if session.get(Purpose, code) is not None:
        raise PolicyConflict(f"purpose {code!r} already exists")
    purpose = Purpose(code=code, description=description, owner=owner, register_uri=register_uri)
    session.add(purpose)
    session.flush()
    return purpose


def create_grant(
    session: Session,
    *,
    subject: str,
    domain: str,
    dataset: str,
    action: str,
    purpose: str,
    legal_basis: str,
    legal_basis_text: str,
    now: datetime,
    valid_until: datetime | None = None,
    epsilon_per_period: float | None = None,
    budget_period: str | None = None,
    delta_per_period: float | None = None,
    valid_from: datetime | None = None,
    k_anonymity: int | None = None,
) -> Grant:
    """Record an allow rule with its legal basis, validity and budget, and its casbin ``p`` line.

    ``subject`` is ``principal:<id>`` or ``role:<name>``. The grant is valid from ``valid_from`` (default
    ``now``, its creation time) until ``valid_until``; outside that window it decides nothing."""
    _check_subject(subject)
    _check_rule_target(domain, dataset, action)
    if session.get(Purpose, purpose) is None:
        raise PolicyConflict(f"purpose {purpose!r} is not in the purpose register")
    if legal_basis not in LEGAL_BASES:
        raise PolicyConflict(f"legal basis {legal_basis!r} is not one of {', '.join(LEGAL_BASES)}")
    if action == "aggregate":
        if (
            epsilon_per_period is None
            or not (math.isfinite(epsilon_per_period) and epsilon_per_period > 0)
            or budget_period not in PERIODS
        ):
            raise PolicyConflict("an aggregate grant needs a finite epsilon_per_period > 0 and a budget_period")
        if delta_per_period is not None and not 0 <= delta_per_period < 1:
            raise PolicyConflict("delta_per_period must lie in [0, 1)")
    elif delta_per_period is not None or epsilon_per_period is not None:
        raise PolicyConflict("only an aggregate grant carries a privacy budget")
    if action == "export":
        k_anonymity = DEFAULT_K_ANONYMITY if k_anonymity is None else k_anonymity
        if not MIN_K_ANONYMITY <= k_anonymity <= MAX_K_ANONYMITY:
            raise PolicyConflict(f"k_anonymity must lie in [{MIN_K_ANONYMITY}, {MAX_K_ANONYMITY}]")
    elif k_anonymity is not None:
        raise PolicyConflict("only an export grant carries k_anonymity")
    start = valid_from or now
    if valid_until is not None and valid_until <= start:
        raise PolicyConflict("a grant must end after it starts")
    grant = Grant(
        subject=subject,
        domain=domain,
        dataset=dataset,
        action=action,
        purpose=purpose,
        legal_basis=legal_basis,
        legal_basis_text=legal_basis_text,
        valid_from=start,
        valid_until=valid_until,
        epsilon_per_period=epsilon_per_period,
        budget_period=budget_period,
        delta_per_period=delta_per_period,
        k_anonymity=k_anonymity,
        created_at=now,
    )
    session.add(grant)
    session.add(CasbinRule(ptype="p", v0=subject, v1=domain, v2=dataset, v3=action, v4=purpose, v5=ALLOW))
    bump_version(session)
    session.flush()
    return grant


def add_deny_rule(
    session: Session, *, subject: str, domain: str, dataset: str, action: str, purpose: str
) -> CasbinRule:
    """A deny rule beats every allow rule that matches the same request (``purpose`` may be ``*``)."""
    _check_subject(subject)
    _check_rule_target(domain, dataset, action)
    if purpose != "*":
        check_identifier("purpose", purpose)
    rule = CasbinRule(ptype="p", v0=subject, v1=domain, v2=dataset, v3=action, v4=purpose, v5=DENY)
    session.add(rule)
    bump_version(session)
    session.flush()
    return rule


def _dataset_matches(pattern: str, dataset: str) -> bool:
    return pattern == "*" or pattern == dataset or (pattern.endswith("*") and dataset.startswith(pattern[:-1]))


def authorize(
    session: Session,
    engine: PolicyEngine,
    principal: AuthenticatedPrincipal,
    *,
    dataset: str,
    action: str,
    purpose: str,
    now: datetime | None = None,
) -> Grant:
    """Decide whether ``principal`` may perform ``action`` on ``dataset`` for ``purpose``.

    casbin decides (deny by default, deny rules win); the grant that carries the legal basis and budget
    must then be active (within its validity window and not revoked). Returns that grant or raises
    ``PolicyDenied`` with a reason that names the purpose.
    """
    now = now or datetime.now(UTC)
    registered = session.get(Purpose, purpose)
    if registered is None:
        raise PolicyDenied(f"purpose {purpose!r} is not in the purpose register")
    if registered.retired_at is not None and registered.retired_at <= now:
        raise PolicyDenied(f"purpose {purpose!r} has been retired from the purpose register")
    engine.ensure_current(session)
    if not engine.allows(principal_subject(principal.id), principal.organisation, dataset, action, purpose):
        raise PolicyDenied(f"no grant allows {action!r} on {dataset!r} for purpose {purpose!r}")
    for grant in _active_grants(session, engine, principal, now, action=action, purpose=purpose):
        if _dataset_matches(grant.dataset, dataset):
            return grant
    raise PolicyDenied(f"the grant for {action!r} on {dataset!r} for purpose {purpose!r} is not active")


def _active_grants(
    session: Session,
    engine: PolicyEngine,
    principal: AuthenticatedPrincipal,
    now: datetime,
    *,
    action: str | None = None,
    purpose: str | None = None,
) -> list[Grant]:
    """Grants to the principal or its roles in its organisation, within their validity window."""
    subject = principal_subject(principal.id)
    statement = select(Grant).where(
        Grant.subject.in_({subject, *engine.roles_of(subject, principal.organisation)}),
        Grant.domain == principal.organisation,
        Grant.revoked_at.is_(None),
        Grant.valid_from <= now,
    )
    if action is not None:
        statement = statement.where(Grant.action == action)
    if purpose is not None:
        statement = statement.where(Grant.purpose == purpose)
    grants = session.scalars(statement.order_by(Grant.id)).all()
    return [grant for grant in grants if grant.valid_until is None or grant.valid_until > now]


def usable_grants(
    session: Session,
    engine: PolicyEngine,
    principal: AuthenticatedPrincipal,
    datasets: Iterable[str],
    *,
    now: datetime,
) -> list[tuple[str, Grant]]:
    """Every (dataset, grant) the principal may use now: the grant is active, its pattern covers the
    dataset, and casbin allows the request (so a deny rule hides what it overrides)."""
    engine.ensure_current(session)
    subject = principal_subject(principal.id)
    usable = []
    names = list(datasets)
    for grant in _active_grants(session, engine, principal, now):
        for dataset in names:
            if _dataset_matches(grant.dataset, dataset) and engine.allows(
                subject, principal.organisation, dataset, grant.action, grant.purpose
            ):
                usable.append((dataset, grant))
    return usable
