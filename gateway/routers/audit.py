"""``/v1/audit``: the privacy officer's view of the audit log (oversight: ``audit:read`` on ``audit``
for purpose ``toezicht``). Reading the log is itself audited."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response

from audit.service import verify_log
from gateway.audit_keys import verification_keys
from gateway.audit_trail import respond
from gateway.deps import AuditDep, PrincipalDep, SessionDep, StateDep, audited_as
from policies import service as policy_service
from policies.management import OVERSIGHT_ACTION, OVERSIGHT_PURPOSE

router = APIRouter(prefix="/v1/audit", tags=["audit"])
AUDIT_OBJECT = "audit"
_REFUSALS: dict[int | str, dict[str, Any]] = {401: {}, 403: {}}


@router.get(
    "/verify",
    responses=_REFUSALS,
    summary="Check the hash chain and every signed checkpoint; report the first broken sequence",
    dependencies=[Depends(audited_as("audit:verify"))],
)
def verify_audit_log(principal: PrincipalDep, session: SessionDep, state: StateDep, audit: AuditDep) -> Response:
    grant = policy_service.authorize(
        session,
        state.policy_engine,
        principal,
        dataset=AUDIT_OBJECT,
        action=OVERSIGHT_ACTION,
        purpose=OVERSIGHT_PURPOSE,
        now=audit.started_at,
    )
    audit.event.dataset, audit.event.purpose, audit.event.legal_basis = AUDIT_OBJECT, grant.purpose, grant.legal_basis
    keys = verification_keys(state.settings)
    result = verify_log(session, keys or None)
    return respond(session, audit, result.report())
