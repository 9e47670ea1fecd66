from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.audit_trail import commit_with_event, respond
from gateway.deps import AuditDep, PrincipalDep, SessionDep, StateDep, audited_as
from gateway.query import service as query_service

router = APIRouter(prefix="/v1", tags=["query"])


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    purpose: str = Field(min_length=1, max_length=128, description="The registered purpose (doelbinding).")
    sql: str = Field(min_length=1, max_length=10_000, examples=["SELECT wijk, COUNT(*) FROM residents GROUP BY wijk"])
    epsilon: float | None = Field(
        default=None, gt=0, strict=True, description="Privacy loss to spend; default set by the gateway."
    )


class QueryResponse(BaseModel):
    columns: list[str]
    rows: list[list[Any]]
    privacy: dict[str, Any]
    request_id: str


@router.post(
    "/query",
    response_model=QueryResponse,
    summary="Answer an aggregate query with differential privacy",
    responses={400: {}, 401: {}, 403: {}, 422: {}, 429: {}, 503: {}},
    dependencies=[Depends(audited_as(query_service.ACTION))],
)
def run_query(
    body: QueryRequest, principal: PrincipalDep, session: SessionDep, state: StateDep, audit: AuditDep
) -> Response:
    audit.event.purpose = body.purpose
    audit.event.query = body.sql
    plan, dataset = query_service.plan_query(body.sql, state.catalog)
    audit.event.dataset = plan.dataset
    audit.event.query = plan.normalised()
    settings = state.settings
    limits = query_service.QueryLimits(settings.default_query_epsilon, settings.max_query_epsilon, settings.max_groups)
    prepared = query_service.prepare(
        session,
        state.policy_engine,
        principal,
        plan=plan,
        dataset=dataset,
        purpose=body.purpose,
        epsilon=body.epsilon,
        limits=limits,
        now=audit.started_at,
    )
    audit.event.legal_basis = prepared.grant.legal_basis
    # End the read phase: no state-database lock is held while the source computes.
    session.commit()

    try:
        answer = query_service.execute(prepared, state.sources)
    except Exception as exc:
        # The source has been read, and a failure can depend on what it read: the query is charged, and
        # the charge commits with its event. The caller gets the error; the handler sees it is audited.
        query_service.record(
            session, prepared, principal, request_id=audit.request_id, now=audit.started_at, data_was_read=True
        )
        failure = audit.finish(
            decision="error",
            reason=getattr(exc, "code", "internal_error"),
            detail=getattr(exc, "message", type(exc).__name__),
            privacy_cost=prepared.epsilon,
        )
        commit_with_event(session, audit, failure)
        raise
    remaining = query_service.record(session, prepared, principal, request_id=audit.request_id, now=audit.started_at)
    payload = {
        "columns": answer.columns,
        "rows": answer.rows,
        "privacy": query_service.privacy_report(prepared, answer, remaining, audit.started_at),
        "request_id": audit.request_id,
    }
    return respond(session, audit, payload, privacy_cost=prepared.epsilon, rows_released=len(answer.rows))
