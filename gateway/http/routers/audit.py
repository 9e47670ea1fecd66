"""``/v1/audit``: the privacy officer's view of the audit log (oversight: ``audit:read`` on ``audit``
for purpose ``toezicht``). Every reading is itself an audit event, committed before anything is sent."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime
from sqlalchemy.orm import Session

from audit import checkpoints, review
from audit.models import AuditCheckpoint
from audit.service import verify_log
from gateway.audit_trail import AuditContext, commit_with_event
from gateway.http.dependencies import AuditDep, PrincipalDep, SessionDep, StateDep, audited_as
from gateway.http.errors import ERROR_RESPONSES
from gateway.http.responses import respond
from gateway.keys.audit_signing import verification_keys
from gateway.state import GatewayState
from gateway.store.database import read_snapshot
from policies import budget as budget_service
from policies import service as policy_service
from policies.management import AUDIT_LOG, OVERSIGHT_ACTION, OVERSIGHT_PURPOSE

router = APIRouter(prefix="/v1/audit", tags=["audit"], responses=ERROR_RESPONSES)
_REFUSALS: dict[int | str, dict[str, Any]] = {401: {}, 403: {}, 422: {}}
Name = Annotated[str | None, Query(max_length=128)]


def oversee(
    session: Session, state: GatewayState, principal: policy_service.AuthenticatedPrincipal, audit: AuditContext
) -> None:
    """Authorise oversight; what follows reads in a snapshot (no write lock) until its event is written."""
    if not session.in_transaction():
        read_snapshot(session)
    grant = policy_service.authorize(
        session,
        state.policy_engine,
        principal,
        dataset=AUDIT_LOG,
        action=OVERSIGHT_ACTION,
        purpose=OVERSIGHT_PURPOSE,
        now=audit.started_at,
    )
    audit.event.dataset, audit.event.purpose, audit.event.legal_basis = AUDIT_LOG, grant.purpose, grant.legal_basis


def _filter(
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    principal_id: Name = None,
    organisation: Name = None,
    dataset: Name = None,
    purpose: Name = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    decision: Annotated[Literal["allow", "deny", "error"] | None, Query()] = None,
) -> review.EventFilter:
    return review.EventFilter(
        since=since,
        until=until,
        principal_id=principal_id,
        organisation=organisation,
        dataset=dataset,
        purpose=purpose,
        action=action,
        decision=decision,
    )


FilterDep = Annotated[review.EventFilter, Depends(_filter)]


@router.get(
    "/verify",
    responses=_REFUSALS,
    summary="Check the hash chain and every signed checkpoint; report the first broken sequence",
    dependencies=[Depends(audited_as("audit:verify"))],
)
def verify_audit_log(
    principal: PrincipalDep,
    session: SessionDep,
    state: StateDep,
    audit: AuditDep,
    min_sequence: Annotated[
        int | None, Query(ge=1, le=2**62, description="A sequence known from outside the log to exist.")
    ] = None,
) -> Response:
    oversee(session, state, principal, audit)
    report, _ = verified_log(state, min_sequence=min_sequence)
    return respond(session, audit, report)


def verified_log(
    state: GatewayState, *, min_sequence: int | None = None
) -> tuple[dict[str, object], AuditCheckpoint | None]:
    """The whole chain and its checkpoints verified now (API and console alike): the report, and the
    latest signed checkpoint, read in the same consistent view."""
    keys = verification_keys(state.settings)
    with state.sessions() as reader:
        read_snapshot(reader)  # one consistent view while the gateway keeps writing
        result = verify_log(
            reader, keys or None, max_gap=state.settings.audit_checkpoint_every_events, min_sequence=min_sequence
        )
        latest = checkpoints.latest_checkpoint(reader)
    return {**result.report(), "verified_with_keys": bool(keys)}, latest


@router.get(
    "/events",
    responses=_REFUSALS,
    summary="Events by time range, principal, organisation, dataset, purpose, action and decision, a page at a time",
    dependencies=[Depends(audited_as("audit:read"))],
)
def list_events(
    where: FilterDep,
    principal: PrincipalDep,
    session: SessionDep,
    state: StateDep,
    audit: AuditDep,
    after: Annotated[int, Query(ge=0, le=2**62, description="The cursor: the last sequence already seen.")] = 0,
    limit: Annotated[int, Query(ge=1, le=review.MAX_PAGE)] = 100,
) -> Response:
    oversee(session, state, principal, audit)
    audit.event.query = f"events {where.describe()} after {after} limit {limit}"
    events, cursor = review.page(session, where, after=after, limit=limit)
    return respond(session, audit, {"events": events, "next": cursor}, rows_released=len(events))


@router.get(
    "/events/export",
    responses=_REFUSALS,
    summary="The same selection, all of it, streamed as JSON lines, CSV, or Logboek Dataverwerkingen records",
    dependencies=[Depends(audited_as("audit:export"))],
)
def export_events(
    where: FilterDep,
    principal: PrincipalDep,
    session: SessionDep,
    state: StateDep,
    audit: AuditDep,
    format: Annotated[ExportFormat, Query()] = "jsonl",
) -> StreamingResponse:
    oversee(session, state, principal, audit)
    return exported(session, state, audit, where, format)


ExportFormat = Literal["jsonl", "csv", "logboek"]


def exported(
    session: Session, state: GatewayState, audit: AuditContext, where: review.EventFilter, format: ExportFormat
) -> StreamingResponse:
    """The selection streamed (API and console alike). The reading is recorded before the first byte
    leaves; the stream's size is not known in advance."""
    audit.event.query = f"export {format} {where.describe()}"
    commit_with_event(session, audit, audit.finish(decision="allow"))

    def body() -> Iterator[bytes]:
        with state.sessions() as reader:
            read_snapshot(reader)  # holds no write lock while the client reads
            records = review.stream(reader, where)
            if format == "csv":
                yield from review.as_csv(records)
            else:
                yield from review.as_logboek(records) if format == "logboek" else review.as_json_lines(records)

    media = "text/csv" if format == "csv" else "application/x-ndjson"
    suffix = {"csv": "csv", "jsonl": "jsonl", "logboek": "logboek.jsonl"}[format]
    disposition = f'attachment; filename="audit-events-{audit.started_at:%Y%m%dT%H%M%SZ}.{suffix}"'
    return StreamingResponse(body(), media_type=media, headers={"Content-Disposition": disposition})


@router.get(
    "/budget",
    responses=_REFUSALS,
    summary="Privacy budget used per principal, unit space, dataset and period",
    dependencies=[Depends(audited_as("audit:read"))],
)
def budget_use(
    principal: PrincipalDep,
    session: SessionDep,
    state: StateDep,
    audit: AuditDep,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    principal_id: Name = None,
    unit_space: Name = None,
    dataset: Name = None,
) -> Response:
    oversee(session, state, principal, audit)
    audit.event.query = (
        f"budget use since={since} until={until} principal_id={principal_id} unit_space={unit_space} dataset={dataset}"
    )
    rows = budget_service.usage(
        session, since=since, until=until, principal_id=principal_id, unit_space=unit_space, dataset=dataset
    )
    return respond(session, audit, {"budget_use": rows}, rows_released=len(rows))


@router.get(
    "/denials",
    responses=_REFUSALS,
    summary="Refused requests, counted by reason, action, organisation and principal",
    dependencies=[Depends(audited_as("audit:read"))],
)
def denials(
    where: FilterDep, principal: PrincipalDep, session: SessionDep, state: StateDep, audit: AuditDep
) -> Response:
    oversee(session, state, principal, audit)
    audit.event.query = f"denials {where.describe()}"
    rows = review.denial_summary(session, where)
    return respond(session, audit, {"denials": rows}, rows_released=len(rows))
