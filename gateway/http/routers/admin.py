"""``/v1/admin``: organisations, principals, keys, purposes, grants and deny rules.

Every route needs an admin grant on its target (the organisation concerned, or ``register`` for the
organisations and the purpose register), decided by casbin like any other request; listings are also open
to the privacy officer's oversight grant. Every change is one audit event, with before and after, committed
with the change itself; the policy engine of this process then rereads the rules at once (other processes
within their poll interval).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from fastapi import Path as FastApiPath
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from gateway.audit_trail import AuditContext, describe_change
from gateway.http.dependencies import AuditDep, PrincipalDep, SessionDep, StateDep, audited_as
from gateway.http.errors import ERROR_RESPONSES
from gateway.http.responses import respond
from gateway.state import GatewayState
from policies import management
from policies.exceptions import UnknownObject
from policies.models import Principal
from policies.service import AuthenticatedPrincipal

router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=ERROR_RESPONSES)
READ = [Depends(audited_as("admin:read"))]
WRITE = [Depends(audited_as("admin"))]
_REFUSALS: dict[int | str, dict[str, Any]] = {401: {}, 403: {}, 404: {}, 409: {}, 422: {}}

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")]
RowId = Annotated[int, FastApiPath(ge=1, le=2**62)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrganisationCreate(_Body):
    id: Identifier
    display_name: str = Field(min_length=1, max_length=256)


class PrincipalCreate(_Body):
    id: Identifier
    display_name: str = Field(min_length=1, max_length=256)
    organisation: Identifier
    kind: Literal["user", "partner", "service"] = "user"
    roles: list[Identifier] = []


class RoleAssign(_Body):
    role: Identifier


class RoleInherit(_Body):
    role: Identifier
    parent: Identifier
    organisation: Identifier


class KeyCreate(_Body):
    principal_id: Identifier
    label: str | None = Field(default=None, max_length=256)
    expires_at: AwareDatetime | None = None


class PurposeCreate(_Body):
    code: Identifier
    description: str = Field(min_length=1, max_length=4000)
    owner: str = Field(min_length=1, max_length=256)
    register_uri: str | None = Field(default=None, max_length=512)


class GrantCreate(_Body):
    subject: str = Field(max_length=140, description="principal:<id> or role:<name>")
    organisation: Identifier
    dataset: str = Field(max_length=128, description="A dataset name, or a prefix ending in *")
    action: Literal["aggregate", "export", "reidentify", "audit:read", "admin"]
    purpose: Identifier
    legal_basis: str = Field(max_length=32, description="One of the AVG art. 6(1) bases")
    legal_basis_text: str = Field(min_length=1, max_length=4000)
    valid_from: AwareDatetime | None = None
    valid_until: AwareDatetime | None = None
    epsilon_per_period: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    delta_per_period: float | None = Field(default=None, ge=0, lt=1)
    budget_period: Literal["month", "year"] | None = None
    k_anonymity: int | None = Field(
        default=None, ge=2, le=10_000, description="Export grants: the smallest class in an extract (default 10)."
    )


class GrantExpire(_Body):
    valid_until: AwareDatetime


class DenyRuleCreate(_Body):
    subject: str = Field(max_length=140)
    organisation: Identifier
    dataset: str = Field(max_length=128)
    action: Literal["aggregate", "export", "reidentify", "audit:read", "admin"]
    purpose: str = Field(max_length=128, description="A purpose, or * for every purpose")


def _authorise(
    session: Session,
    state: GatewayState,
    principal: AuthenticatedPrincipal,
    audit: AuditContext,
    target: Callable[[], str] | str,
    *,
    read_only: bool = False,
) -> None:
    """Decide on the object's organisation. An object that does not exist is reported (404) only to an
    administrator of the register, so others cannot probe which objects exist."""
    now = audit.started_at
    try:
        organisation = target if isinstance(target, str) else target()
    except UnknownObject:
        management.require_admin(session, state.policy_engine, principal, management.REGISTER, now=now)
        raise
    management.require_admin(session, state.policy_engine, principal, organisation, now=now, read_only=read_only)


def _changed(
    session: Session,
    state: GatewayState,
    audit: AuditContext,
    change: management.Change,
    payload: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    detail = describe_change(audit, change)
    response = respond(session, audit, payload or change.describe(), detail=detail, status_code=status_code)
    state.policy_engine.mark_stale()
    return response


def _listing(session: Session, audit: AuditContext, name: str, items: list[dict[str, Any]]) -> Response:
    return respond(session, audit, {name: items}, rows_released=len(items))


# Organisations


@router.get("/organisations", dependencies=READ, responses=_REFUSALS, summary="Organisations (domains)")
def list_organisations(principal: PrincipalDep, session: SessionDep, state: StateDep, audit: AuditDep) -> Response:
    _authorise(session, state, principal, audit, management.REGISTER, read_only=True)
    return _listing(session, audit, "organisations", management.list_organisations(session))


@router.post("/organisations", dependencies=WRITE, responses=_REFUSALS, status_code=201)
def create_organisation(
    body: OrganisationCreate, principal: PrincipalDep, session: SessionDep, state: StateDep, audit: AuditDep
) -> Response:
    _authorise(session, state, principal, audit, management.REGISTER)
    change = management.create_organisation(
        session, organisation_id=body.id, display_name=body.display_name, now=audit.started_at
    )
    return _changed(session, state, audit, change, status_code=201)


@router.post("/organisations/{organisation_id}/disable", dependencies=WRITE, responses=_REFUSALS)
def disable_organisation(
    organisation_id: str, principal: PrincipalDep, session: SessionDep, state: StateDep, audit: AuditDep
) -> Response:
    _authorise(session, state, principal, audit, management.REGISTER)
    change = management.disable_organisation(session, organisation_id=organisation_id, now=audit.started_at)
    return _changed(session, state, audit, change)


# Principals and roles


@router.get("/principals", dependencies=READ, responses=_REFUSALS, summary="Principals and their roles")
def list_principals(
    principal: PrincipalDep,
    session: SessionDep,
    state: StateDep,
    audit: AuditDep,
    organisation: Annotated[str | None, Query(max_length=128)] = None,
) -> Response:
    _authorise(session, state, principal, audit, organisation or management.REGISTER, read_only=True)
    return _listing(session, audit, "principals", management.list_principals(session, organisation))


@router.post("/principals", dependencies=WRITE, responses=_REFUSALS, status_code=201)
def create_principal(
    body: PrincipalCreate, principal: PrincipalDep, session: SessionDep, state: StateDep, audit: AuditDep
) -> Response:
    _authorise(session, state, principal, audit, body.organisation)
    change = management.create_principal(
        session,
        principal_id=body.id,
        display_name=body.display_name,
        organisation=body.organisation,
        kind=body.kind,
        now=audit.started_at,
    )
    for role in body.roles:
        management.assign_role(session, principal_id=body.id, role=role)
    after = management.principal_view(session, _principal(session, body.id))
    created = management.Change(change.what, change.target, None, after, body.organisation)
    return _changed(session, state, audit, created, status_code=201)


def _principal_organisation(session: Session, principal_id: str) -> Callable[[], str]:
    def organisation() -> str:
        return _principal(session, principal_id).organisation

    return organisation


def _principal(session: Session, principal_id: str) -> Principal:
    found = session.get(Principal, principal_id)
    if found is None:
        raise UnknownObject(f"there is no principal {principal_id!r}")
    return found


@router.post("/principals/{principal_id}/disable", dependencies=WRITE, responses=_REFUSALS)
def disable_principal(
    principal_id: str, principal: PrincipalDep, session: SessionDep, state: StateDep, audit: AuditDep
) -> Response:
    _authorise(session, state, principal, audit, _principal_organisation(session, principal_id))
    change = management.disable_principal(session, principal_id=principal_id, now=audit.started_at)
    return _changed(session, state, audit, change)


@router.post("/principals/{principal_id}/roles", dependencies=WRITE, responses=_REFUSALS)
def assign_role(
    principal_id: str, body: RoleAssign, principal: PrincipalDep, session: SessionDep, state: StateDep, audit: AuditDep
) -> Response:
    _authorise(session, state, principal, audit, _principal_organisation(session, principal_id))
    change = management.assign_role(session, principal_id=principal_id, role=body.role)
    return _changed(session, state, audit, change)


@router.delete("/principals/{principal_id}/roles/{role}", dependencies=WRITE, responses=_REFUSALS)
def remove_role(
    principal_id: str, role: str, principal: PrincipalDep, session: SessionDep, state: StateDep, audit: AuditDep
) -> Response:
    _authorise(session, state, principal, audit, _principal_organisation(session, principal_id))
    change = management.remove_role(session, principal_id=principal_id, role=role)
    return _changed(session, state, audit, change)


@router.post("/roles/inherit", dependencies=WRITE, responses=_REFUSALS)
def inherit_role(
    body: RoleInherit, principal: PrincipalDep, session: SessionDep, state: StateDep, audit: AuditDep
) -> Response:
    _authorise(session, state, principal, audit, body.organisation)
    change = management.inherit_role(session, role=body.role, parent=body.parent, organisation=body.organisation)
    return _changed(session, state, audit, change)


@router.delete("/roles/inherit", dependencies=WRITE, responses=_REFUSALS)
def remove_inheritance(
    principal: PrincipalDep,
    session: SessionDep,
    state: StateDep,
    audit: AuditDep,
    role: Annotated[str, Query(max_length=128)],
    parent: Annotated[str, Query(max_length=128)],
    organisation: Annotated[str, Query(max_length=128)],
) -> Response:
    _authorise(session, state, principal, audit, organisation)
    change = management.remove_inheritance(session, role=role, parent=parent, organisation=organisation)
    return _changed(session, state, audit, change)


# API keys


@router.get("/keys", dependencies=READ, responses=_REFUSALS, summary="API keys (never their secrets)")
def list_keys(
    principal: PrincipalDep,
    session: SessionDep,
    state: StateDep,
    audit: AuditDep,
    organisation: Annotated[str | None, Query(max_length=128)] = None,
) -> Response:
    _authorise(session, state, principal, audit, organisation or management.REGISTER, read_only=True)
    return _listing(session, audit, "keys", management.list_keys(session, organisation=organisation))


@router.post("/keys", dependencies=WRITE, responses=_REFUSALS, status_code=201)
def issue_key(
    body: KeyCreate, principal: PrincipalDep, session: SessionDep, state: StateDep, audit: AuditDep
) -> Response:
    """The key itself is in this response only: it is stored as a hash and cannot be shown again."""
    _authorise(session, state, principal, audit, _principal_organisation(session, body.principal_id))
    new, change = management.issue_key(
        session, principal_id=body.principal_id, now=audit.started_at, label=body.label, expires_at=body.expires_at
    )
    return _changed(session, state, audit, change, {**change.describe(), "token": new.token}, 201)


@router.post("/keys/{key_id}/revoke", dependencies=WRITE, responses=_REFUSALS)
def revoke_key(key_id: str, principal: PrincipalDep, session: SessionDep, state: StateDep, audit: AuditDep) -> Response:
    _authorise(session, state, principal, audit, lambda: management.key_organisation(session, key_id))
    change = management.revoke_key(session, key_id=key_id, now=audit.started_at)
    return _changed(session, state, audit, change)


# Purposes


@router.get("/purposes", dependencies=READ, responses=_REFUSALS, summary="The purpose register")
def list_purposes(principal: PrincipalDep, session: SessionDep, state: StateDep, audit: AuditDep) -> Response:
    _authorise(session, state, principal, audit, management.REGISTER, read_only=True)
    return _listing(session, audit, "purposes", management.list_purposes(session))


@router.post("/purposes", dependencies=WRITE, responses=_REFUSALS, status_code=201)
def register_purpose(
    body: PurposeCreate, principal: PrincipalDep, session: SessionDep, state: StateDep, audit: AuditDep
) -> Response:
    _authorise(session, state, principal, audit, management.REGISTER)
    change = management.register_purpose(
        session, code=body.code, description=body.description, owner=body.owner, register_uri=body.register_uri
    )
    return _changed(session, state, audit, change, status_code=201)


@router.post("/purposes/{code}/retire", dependencies=WRITE, responses=_REFUSALS)
def retire_purpose(
    code: str, principal: PrincipalDep, session: SessionDep, state: StateDep, audit: AuditDep
) -> Response:
    _authorise(session, state, principal, audit, management.REGISTER)
    change = management.retire_purpose(session, code=code, now=audit.started_at)
    return _changed(session, state, audit, change)


# Grants and deny rules


@router.get(
    "/grants",
    dependencies=READ,
    responses=_REFUSALS,
    summary="Who may do what, on which dataset, for which purpose, on which legal basis, until when",
)
def list_grants(
    principal: PrincipalDep,
    session: SessionDep,
    state: StateDep,
    audit: AuditDep,
    organisation: Annotated[str | None, Query(max_length=128)] = None,
    subject: Annotated[str | None, Query(max_length=140)] = None,
    dataset: Annotated[str | None, Query(max_length=128)] = None,
    action: Annotated[str | None, Query(max_length=32)] = None,
    purpose: Annotated[str | None, Query(max_length=128)] = None,
    include_inactive: bool = False,
) -> Response:
    _authorise(session, state, principal, audit, organisation or management.REGISTER, read_only=True)
    where = management.GrantFilter(
        organisation=organisation,
        subject=subject,
        dataset=dataset,
        action=action,
        purpose=purpose,
        include_inactive=include_inactive,
        now=audit.started_at,
    )
    grants = management.list_grants(session, where)
    deny_rules = management.list_deny_rules(session, organisation)
    return respond(session, audit, {"grants": grants, "deny_rules": deny_rules}, rows_released=len(grants))


@router.post("/grants", dependencies=WRITE, responses=_REFUSALS, status_code=201)
def create_grant(
    body: GrantCreate, principal: PrincipalDep, session: SessionDep, state: StateDep, audit: AuditDep
) -> Response:
    _authorise(session, state, principal, audit, body.organisation)
    if management.rule_needs_register_admin(body.action):
        _authorise(session, state, principal, audit, management.REGISTER)
    change = management.create_grant(
        session,
        subject=body.subject,
        domain=body.organisation,
        dataset=body.dataset,
        action=body.action,
        purpose=body.purpose,
        legal_basis=body.legal_basis,
        legal_basis_text=body.legal_basis_text,
        now=audit.started_at,
        valid_from=body.valid_from,
        valid_until=body.valid_until,
        epsilon_per_period=body.epsilon_per_period,
        delta_per_period=body.delta_per_period,
        budget_period=body.budget_period,
        k_anonymity=body.k_anonymity,
    )
    return _changed(session, state, audit, change, status_code=201)


@router.post("/grants/{grant_id}/revoke", dependencies=WRITE, responses=_REFUSALS)
def revoke_grant(
    grant_id: RowId, principal: PrincipalDep, session: SessionDep, state: StateDep, audit: AuditDep
) -> Response:
    _authorise(session, state, principal, audit, lambda: management.grant_organisation(session, grant_id))
    change = management.revoke_grant(session, grant_id=grant_id, now=audit.started_at)
    return _changed(session, state, audit, change)


@router.post("/grants/{grant_id}/expire", dependencies=WRITE, responses=_REFUSALS)
def expire_grant(
    grant_id: RowId, body: GrantExpire, principal: PrincipalDep, session: SessionDep, state: StateDep, audit: AuditDep
) -> Response:
    _authorise(session, state, principal, audit, lambda: management.grant_organisation(session, grant_id))
    change = management.expire_grant(session, grant_id=grant_id, valid_until=body.valid_until, now=audit.started_at)
    return _changed(session, state, audit, change)


@router.post("/deny-rules", dependencies=WRITE, responses=_REFUSALS, status_code=201)
def add_deny_rule(
    body: DenyRuleCreate, principal: PrincipalDep, session: SessionDep, state: StateDep, audit: AuditDep
) -> Response:
    _authorise(session, state, principal, audit, body.organisation)
    if management.rule_needs_register_admin(body.action):
        _authorise(session, state, principal, audit, management.REGISTER)
    change = management.add_deny_rule(
        session,
        subject=body.subject,
        organisation=body.organisation,
        dataset=body.dataset,
        action=body.action,
        purpose=body.purpose,
    )
    return _changed(session, state, audit, change, status_code=201)


@router.delete("/deny-rules/{rule_id}", dependencies=WRITE, responses=_REFUSALS)
def remove_deny_rule(
    rule_id: RowId, principal: PrincipalDep, session: SessionDep, state: StateDep, audit: AuditDep
) -> Response:
    _authorise(session, state, principal, audit, lambda: management.deny_organisation(session, rule_id))
    change = management.remove_deny_rule(session, rule_id=rule_id)
    return _changed(session, state, audit, change)
