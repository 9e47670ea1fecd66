"""Managing organisations, principals, keys, purposes, roles and grants, each change described for the audit log.

Every mutating function makes its change in the caller's transaction (it never commits) and returns a
``Change``: what was done to which object, and the object before and after, as plain JSON-able data. The
caller writes that into the audit event of the same transaction, so a change and its record land together.
Secrets never appear in a ``Change``: a new key's token is returned beside it, once.

Who may call these is decided elsewhere (``require_admin``), as every other decision: by casbin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from policies import api_keys, service
from policies.enforcer import ALLOW, DENY, PolicyEngine, bump_version, principal_subject, role_subject
from policies.exceptions import PolicyConflict, PolicyDenied, UnknownObject
from policies.models import ApiKey, CasbinRule, Grant, Organisation, Principal, Purpose

ADMIN_ACTION = "admin"
ADMIN_PURPOSE = "beheer"
"""Administration is itself a purpose: an admin grant is ``admin`` on a target for purpose ``beheer``."""
OVERSIGHT_ACTION = "audit:read"
OVERSIGHT_PURPOSE = "toezicht"
"""The privacy officer's oversight (AVG art. 39) of an organisation may read its rules, never change them."""
REGISTER = service.REGISTER_TARGET
AUDIT_LOG = service.AUDIT_LOG_TARGET
RESERVED_TARGETS = service.RESERVED_TARGETS
"""The admin target for what belongs to no organisation: the organisations and the purpose register."""


@dataclass(frozen=True, slots=True)
class Change:
    what: str
    """e.g. ``grant.revoke``."""
    target: str
    """The object changed, e.g. ``grant:12``."""
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    organisation: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"what": self.what, "target": self.target, "before": self.before, "after": self.after}


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def require_admin(
    session: Session,
    engine: PolicyEngine,
    principal: service.AuthenticatedPrincipal,
    target: str,
    *,
    now: datetime,
    read_only: bool = False,
) -> None:
    """Allow an administrator of ``target`` (an organisation id, or ``register``); for reading, also a
    privacy officer with oversight of it. Decided as every other request is (``service.authorize``):
    casbin with its deny rules, the purpose in the register, and an active grant, so an expired or
    not yet valid admin grant allows nothing."""
    try:
        service.authorize(
            session, engine, principal, dataset=target, action=ADMIN_ACTION, purpose=ADMIN_PURPOSE, now=now
        )
        return
    except PolicyDenied:
        if not read_only:
            raise PolicyDenied(
                f"administering {target!r} needs an active admin grant for purpose {ADMIN_PURPOSE!r}"
            ) from None
    try:
        service.authorize(
            session, engine, principal, dataset=target, action=OVERSIGHT_ACTION, purpose=OVERSIGHT_PURPOSE, now=now
        )
    except PolicyDenied:
        raise PolicyDenied(
            f"reading the rules of {target!r} needs an active admin grant ({ADMIN_PURPOSE!r}) "
            f"or oversight grant ({OVERSIGHT_ACTION!r} for {OVERSIGHT_PURPOSE!r})"
        ) from None


def rule_needs_register_admin(action: str) -> bool:
    """Rules that hand out administration or oversight can widen who controls the rules themselves,
    so only an administrator of the register may create or deny them (not an organisation's own)."""
    return action in (ADMIN_ACTION, OVERSIGHT_ACTION)


# Organisations ----------------------------------------------------------------------------------------


def organisation_view(organisation: Organisation) -> dict[str, Any]:
    return {
        "id": organisation.id,
        "display_name": organisation.display_name,
        "created_at": _iso(organisation.created_at),
        "disabled_at": _iso(organisation.disabled_at),
    }


def create_organisation(session: Session, *, organisation_id: str, display_name: str, now: datetime) -> Change:
    service.check_identifier("organisation", organisation_id)
    if organisation_id in RESERVED_TARGETS:
        raise PolicyConflict(f"{organisation_id!r} names a Datapoort object, not an organisation")
    if session.get(Organisation, organisation_id) is not None:
        raise PolicyConflict(f"organisation {organisation_id!r} already exists")
    organisation = Organisation(id=organisation_id, display_name=display_name, created_at=now)
    session.add(organisation)
    session.flush()
    return Change("organisation.create", f"organisation:{organisation_id}", None, organisation_view(organisation))


def list_organisations(session: Session) -> list[dict[str, Any]]:
    return [organisation_view(o) for o in session.scalars(select(Organisation).order_by(Organisation.id))]


def disable_organisation(session: Session, *, organisation_id: str, now: datetime) -> Change:
    """Every principal of a disabled organisation fails authentication from the next request on."""
    organisation = _get(session, Organisation, organisation_id, "organisation")
    before = organisation_view(organisation)
    if organisation.disabled_at is None:
        organisation.disabled_at = now
    session.flush()
    return Change(
        "organisation.disable",
        f"organisation:{organisation_id}",
        before,
        organisation_view(organisation),
        organisation_id,
    )


# Principals and roles ---------------------------------------------------------------------------------


def principal_view(session: Session, principal: Principal) -> dict[str, Any]:
    roles = session.scalars(
        select(CasbinRule.v1).where(CasbinRule.ptype == "g", CasbinRule.v0 == principal_subject(principal.id))
    ).all()
    return {
        "id": principal.id,
        "display_name": principal.display_name,
        "organisation": principal.organisation,
        "kind": principal.kind,
        "roles": sorted(str(role).removeprefix("role:") for role in roles),
        "created_at": _iso(principal.created_at),
        "disabled_at": _iso(principal.disabled_at),
    }


def create_principal(
    session: Session, *, principal_id: str, display_name: str, organisation: str, kind: str, now: datetime
) -> Change:
    registered = session.get(Organisation, organisation)
    if registered is None or registered.disabled_at is not None:
        raise PolicyConflict(f"organisation {organisation!r} is not registered, or disabled; create it first")
    principal = service.create_principal(
        session, principal_id=principal_id, display_name=display_name, organisation=organisation, kind=kind, now=now
    )
    return Change(
        "principal.create", f"principal:{principal_id}", None, principal_view(session, principal), organisation
    )


def list_principals(session: Session, organisation: str | None = None) -> list[dict[str, Any]]:
    statement = select(Principal).order_by(Principal.id)
    if organisation is not None:
        statement = statement.where(Principal.organisation == organisation)
    return [principal_view(session, principal) for principal in session.scalars(statement)]


def disable_principal(session: Session, *, principal_id: str, now: datetime) -> Change:
    principal = _get(session, Principal, principal_id, "principal")
    before = principal_view(session, principal)
    if principal.disabled_at is None:
        principal.disabled_at = now
    session.flush()
    return Change(
        "principal.disable",
        f"principal:{principal_id}",
        before,
        principal_view(session, principal),
        principal.organisation,
    )


def assign_role(session: Session, *, principal_id: str, role: str) -> Change:
    principal = _get(session, Principal, principal_id, "principal")
    before = principal_view(session, principal)
    if role in before["roles"]:
        raise PolicyConflict(f"principal {principal_id!r} already has role {role!r}")
    service.assign_role(session, principal_id=principal_id, role=role, domain=principal.organisation)
    return Change(
        "principal.assign_role",
        f"principal:{principal_id}",
        before,
        principal_view(session, principal),
        principal.organisation,
    )


def remove_role(session: Session, *, principal_id: str, role: str) -> Change:
    principal = _get(session, Principal, principal_id, "principal")
    before = principal_view(session, principal)
    removed = session.execute(
        delete(CasbinRule).where(
            CasbinRule.ptype == "g",
            CasbinRule.v0 == principal_subject(principal_id),
            CasbinRule.v1 == role_subject(role),
            CasbinRule.v2 == principal.organisation,
        )
    )
    if not removed.rowcount:  # type: ignore[attr-defined]
        raise PolicyConflict(f"principal {principal_id!r} does not have role {role!r}")
    bump_version(session)
    session.flush()
    return Change(
        "principal.remove_role",
        f"principal:{principal_id}",
        before,
        principal_view(session, principal),
        principal.organisation,
    )


def inherit_role(session: Session, *, role: str, parent: str, organisation: str) -> Change:
    service.inherit_role(session, role=role, parent=parent, domain=organisation)
    return Change(
        "role.inherit",
        f"role:{role}@{organisation}",
        None,
        {"role": role, "inherits": parent, "organisation": organisation},
        organisation,
    )


def remove_inheritance(session: Session, *, role: str, parent: str, organisation: str) -> Change:
    removed = session.execute(
        delete(CasbinRule).where(
            CasbinRule.ptype == "g",
            CasbinRule.v0 == role_subject(role),
            CasbinRule.v1 == role_subject(parent),
            CasbinRule.v2 == organisation,
        )
    )
    if not removed.rowcount:  # type: ignore[attr-defined]
        raise UnknownObject(f"role {role!r} does not inherit from {parent!r} in {organisation!r}")
    bump_version(session)
    session.flush()
    return Change(
        "role.remove_inheritance",
        f"role:{role}@{organisation}",
        {"role": role, "inherits": parent, "organisation": organisation},
        None,
        organisation,
    )


# API keys ---------------------------------------------------------------------------------------------


def key_view(key: ApiKey) -> dict[str, Any]:
    """What may be shown of a key: never its secret or hash."""
    return {
        "id": key.id,
        "principal_id": key.principal_id,
        "label": key.label,
        "created_at": _iso(key.created_at),
        "expires_at": _iso(key.expires_at),
        "revoked_at": _iso(key.revoked_at),
        "last_used_at": _iso(key.last_used_at),
    }


def issue_key(
    session: Session, *, principal_id: str, now: datetime, label: str | None = None, expires_at: datetime | None = None
) -> tuple[api_keys.NewKey, Change]:
    principal = _get(session, Principal, principal_id, "principal")
    if expires_at is not None and expires_at <= now:
        raise PolicyConflict("a key's expiry must lie in the future")
    new = service.issue_key(session, principal_id=principal_id, now=now, label=label, expires_at=expires_at)
    key = _get(session, ApiKey, new.key_id, "key")
    return new, Change("key.issue", f"key:{key.id}", None, key_view(key), principal.organisation)


def list_keys(
    session: Session, principal_id: str | None = None, organisation: str | None = None
) -> list[dict[str, Any]]:
    statement = select(ApiKey).join(Principal, Principal.id == ApiKey.principal_id).order_by(ApiKey.created_at)
    if principal_id is not None:
        statement = statement.where(ApiKey.principal_id == principal_id)
    if organisation is not None:
        statement = statement.where(Principal.organisation == organisation)
    return [key_view(key) for key in session.scalars(statement)]


def key_organisation(session: Session, key_id: str) -> str:
    key = _get(session, ApiKey, key_id, "key")
    return str(_get(session, Principal, key.principal_id, "principal").organisation)


def revoke_key(session: Session, *, key_id: str, now: datetime) -> Change:
    """The key fails authentication from the next request on (keys are looked up on every request)."""
    key = _get(session, ApiKey, key_id, "key")
    before = key_view(key)
    if key.revoked_at is None:
        key.revoked_at = now
    session.flush()
    return Change("key.revoke", f"key:{key_id}", before, key_view(key), key_organisation(session, key_id))


# Purposes ---------------------------------------------------------------------------------------------


def purpose_view(purpose: Purpose) -> dict[str, Any]:
    return {
        "code": purpose.code,
        "description": purpose.description,
        "owner": purpose.owner,
        "register_uri": purpose.register_uri,
        "retired_at": _iso(purpose.retired_at),
    }


def register_purpose(
    session: Session, *, code: str, description: str, owner: str, register_uri: str | None = None
) -> Change:
    purpose = service.register_purpose(
        session, code=code, description=description, owner=owner, register_uri=register_uri
    )
    return Change("purpose.register", f"purpose:{code}", None, purpose_view(purpose))


def list_purposes(session: Session) -> list[dict[str, Any]]:
    return [purpose_view(purpose) for purpose in session.scalars(select(Purpose).order_by(Purpose.code))]


def retire_purpose(session: Session, *, code: str, now: datetime) -> Change:
    """A retired purpose allows nothing from now on, whatever grants name it."""
    purpose = _get(session, Purpose, code, "purpose")
    before = purpose_view(purpose)
    if purpose.retired_at is None:
        purpose.retired_at = now
    session.flush()
    return Change("purpose.retire", f"purpose:{code}", before, purpose_view(purpose))


# Grants and deny rules --------------------------------------------------------------------------------


def grant_view(grant: Grant) -> dict[str, Any]:
    return {
        "id": grant.id,
        "subject": grant.subject,
        "organisation": grant.domain,
        "dataset": grant.dataset,
        "action": grant.action,
        "purpose": grant.purpose,
        "legal_basis": grant.legal_basis,
        "legal_basis_article": service.LEGAL_BASES.get(grant.legal_basis),
        "legal_basis_text": grant.legal_basis_text,
        "valid_from": _iso(grant.valid_from),
        "valid_until": _iso(grant.valid_until),
        "revoked_at": _iso(grant.revoked_at),
        "epsilon_per_period": grant.epsilon_per_period,
        "delta_per_period": grant.delta_per_period,
        "budget_period": grant.budget_period,
        "k_anonymity": grant.k_anonymity,
        "created_at": _iso(grant.created_at),
    }


def create_grant(session: Session, **arguments: Any) -> Change:
    grant = service.create_grant(session, **arguments)
    return Change("grant.create", f"grant:{grant.id}", None, grant_view(grant), grant.domain)


@dataclass(frozen=True, slots=True)
class GrantFilter:
    organisation: str | None = None
    subject: str | None = None
    dataset: str | None = None
    action: str | None = None
    purpose: str | None = None
    include_inactive: bool = False
    now: datetime | None = field(default=None)


def list_grants(session: Session, where: GrantFilter) -> list[dict[str, Any]]:
    statement = select(Grant).order_by(Grant.id)
    for column, value in (
        (Grant.domain, where.organisation),
        (Grant.subject, where.subject),
        (Grant.dataset, where.dataset),
        (Grant.action, where.action),
        (Grant.purpose, where.purpose),
    ):
        if value is not None:
            statement = statement.where(column == value)
    grants = list(session.scalars(statement))
    if not where.include_inactive and where.now is not None:
        now = where.now
        grants = [
            g
            for g in grants
            if g.revoked_at is None and g.valid_from <= now and (g.valid_until is None or g.valid_until > now)
        ]
    return [grant_view(grant) for grant in grants]


def grant_organisation(session: Session, grant_id: int) -> str:
    return str(_get(session, Grant, grant_id, "grant").domain)


def _drop_rule_line(session: Session, grant: Grant) -> None:
    """Remove the grant's ``p`` line (one of them, should an identical grant exist) so that it decides
    nothing any more, not even in casbin."""
    rule_id = session.scalar(
        select(CasbinRule.id)
        .where(
            CasbinRule.ptype == "p",
            CasbinRule.v0 == grant.subject,
            CasbinRule.v1 == grant.domain,
            CasbinRule.v2 == grant.dataset,
            CasbinRule.v3 == grant.action,
            CasbinRule.v4 == grant.purpose,
            CasbinRule.v5 == ALLOW,
        )
        .order_by(CasbinRule.id)
        .limit(1)
    )
    if rule_id is not None:
        session.execute(delete(CasbinRule).where(CasbinRule.id == rule_id))
    bump_version(session)


def revoke_grant(session: Session, *, grant_id: int, now: datetime) -> Change:
    grant = _get(session, Grant, grant_id, "grant")
    before = grant_view(grant)
    if grant.revoked_at is not None:
        raise PolicyConflict(f"grant {grant_id} is already revoked")
    grant.revoked_at = now
    _drop_rule_line(session, grant)
    session.flush()
    return Change("grant.revoke", f"grant:{grant_id}", before, grant_view(grant), grant.domain)


def expire_grant(session: Session, *, grant_id: int, valid_until: datetime, now: datetime) -> Change:
    """Set (or bring forward) the end of a grant's validity; a grant that has ended decides nothing."""
    grant = _get(session, Grant, grant_id, "grant")
    before = grant_view(grant)
    if grant.revoked_at is not None:
        raise PolicyConflict(f"grant {grant_id} is revoked")
    if valid_until < grant.valid_from:
        raise PolicyConflict("a grant cannot end before it starts")
    grant.valid_until = valid_until
    session.flush()
    return Change("grant.expire", f"grant:{grant_id}", before, grant_view(grant), grant.domain)


def deny_view(rule: CasbinRule) -> dict[str, Any]:
    return {
        "id": rule.id,
        "subject": rule.v0,
        "organisation": rule.v1,
        "dataset": rule.v2,
        "action": rule.v3,
        "purpose": rule.v4,
    }


def add_deny_rule(
    session: Session, *, subject: str, organisation: str, dataset: str, action: str, purpose: str
) -> Change:
    rule = service.add_deny_rule(
        session, subject=subject, domain=organisation, dataset=dataset, action=action, purpose=purpose
    )
    return Change("deny.add", f"deny:{rule.id}", None, deny_view(rule), organisation)


def list_deny_rules(session: Session, organisation: str | None = None) -> list[dict[str, Any]]:
    statement = select(CasbinRule).where(CasbinRule.ptype == "p", CasbinRule.v5 == DENY).order_by(CasbinRule.id)
    if organisation is not None:
        statement = statement.where(CasbinRule.v1 == organisation)
    return [deny_view(rule) for rule in session.scalars(statement)]


def deny_organisation(session: Session, rule_id: int) -> str:
    rule = session.get(CasbinRule, rule_id)
    if rule is None or rule.ptype != "p" or rule.v5 != DENY:
        raise UnknownObject(f"there is no deny rule {rule_id}")
    return str(rule.v1)


def remove_deny_rule(session: Session, *, rule_id: int) -> Change:
    organisation = deny_organisation(session, rule_id)
    rule = _get(session, CasbinRule, rule_id, "deny rule")
    before = deny_view(rule)
    session.execute(delete(CasbinRule).where(CasbinRule.id == rule_id))
    bump_version(session)
    session.flush()
    return Change("deny.remove", f"deny:{rule_id}", before, None, organisation)


def _get(session: Session, model: Any, key: Any, kind: str) -> Any:
    found = session.get(model, key)
    if found is None:
        raise UnknownObject(f"there is no {kind} {key!r}")
    return found
