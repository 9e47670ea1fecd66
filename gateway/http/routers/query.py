from __future__ import annotations

import logging
import math
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from audit.exceptions import AuditUnavailable
from gateway.audit_trail import AuditContext, commit_with_event
from gateway.exceptions import InvalidQuery
from gateway.http.dependencies import AuditDep, PrincipalDep, SessionDep, StateDep, audited_as
from gateway.http.errors import ERROR_RESPONSES
from gateway.http.responses import respond
from gateway.query import service as query_service
from gateway.query.json_frontend import JsonPlan, plan_from_json
from gateway.query.public_query import PublicQuery, plan_public, public_only
from gateway.state import GatewayState
from gateway.store.database import read_snapshot
from policies import budget as budget_service
from policies.exceptions import BudgetExhausted
from policies.models import Grant
from policies.service import AuthenticatedPrincipal, authorize

router = APIRouter(prefix="/v1", tags=["query"], responses=ERROR_RESPONSES)
logger = logging.getLogger("datapoort.query")


class Accuracy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    half_width: float = Field(gt=0, allow_inf_nan=False, description="Each COUNT/SUM within ± this of the truth.")
    confidence: float = Field(default=0.95, ge=0.5, le=0.999, description="With this probability.")


class QueryRequest(BaseModel):
    # The one-of rules below, in the OpenAPI too (null is not offered: leave a field out instead).
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"required": ["sql"], "not": {"required": ["plan"]}},
                {"required": ["plan"], "not": {"required": ["sql"]}},
            ],
            "not": {"required": ["epsilon", "accuracy"]},
        },
    )

    purpose: str = Field(min_length=1, max_length=128, description="The registered purpose (doelbinding).")
    sql: Annotated[str, Field(min_length=1, max_length=10_000)] | SkipJsonSchema[None] = Field(
        default=None, examples=["SELECT wijk, COUNT(*) FROM residents GROUP BY wijk"]
    )
    plan: JsonPlan | SkipJsonSchema[None] = Field(
        default=None, description="The same question as a JSON plan, instead of sql."
    )
    epsilon: Annotated[float, Field(gt=0, strict=True)] | SkipJsonSchema[None] = Field(
        default=None, description="Privacy loss to spend; default set by the gateway."
    )
    accuracy: Accuracy | SkipJsonSchema[None] = Field(default=None, description="Ask for accuracy instead of epsilon.")
    delta: Annotated[float, Field(gt=0, lt=1, strict=True)] | SkipJsonSchema[None] = Field(
        default=None,
        description="Only for a query grouping by a column without public keys (partition selection): the "
        "delta to spend on choosing its groups; default set by the gateway.",
    )

    @model_validator(mode="after")
    def _one_question_one_price(self) -> QueryRequest:
        if (self.sql is None) == (self.plan is None):
            raise ValueError("give exactly one of 'sql' and 'plan'")
        if self.epsilon is not None and self.accuracy is not None:
            raise ValueError("give 'epsilon' or 'accuracy', not both")
        return self


class QueryResponse(BaseModel):
    columns: list[str]
    rows: list[list[Any]]
    privacy: dict[str, Any]
    request_id: str


class EstimateResponse(BaseModel):
    epsilon: float
    delta: float
    confidence: float
    aggregates: dict[str, Any]
    group_selection: dict[str, Any] | None
    budget: dict[str, Any]
    request_id: str


_REFUSALS: dict[int | str, dict[str, Any]] = {400: {}, 401: {}, 403: {}, 422: {}, 429: {}, 503: {}}


def prepare(
    body: QueryRequest,
    principal: AuthenticatedPrincipal,
    state: GatewayState,
    audit: AuditContext,
) -> query_service.PreparedQuery:
    """Plan and price in a read-only snapshot of its own (no write lock, nothing held afterwards)."""
    try:
        with state.sessions() as reader:
            read_snapshot(reader)
            prepared = _plan_and_price(body, principal, reader, state, audit)
            reader.commit()  # ends the snapshot; what was read stays loaded
            return prepared
    except RecursionError as exc:
        # The front doors' nesting limits keep queries far from this; a shape they do not foresee is
        # still a refused query (nothing has been read or spent), not a 500.
        raise InvalidQuery("the query is nested too deeply") from exc


def _plan_and_price(
    body: QueryRequest,
    principal: AuthenticatedPrincipal,
    session: Session,
    state: GatewayState,
    audit: AuditContext,
) -> query_service.PreparedQuery:
    audit.event.purpose = body.purpose
    settings = state.settings
    if body.plan is not None:
        audit.event.query = body.plan.model_dump_json(by_alias=True, exclude_defaults=True)[:10_000]
        resolved = query_service.resolve_plan(
            plan_from_json(body.plan), state.catalog, state.sources, settings.max_join_contributions
        )
    else:
        audit.event.query = body.sql
        resolved = query_service.resolve_sql(
            body.sql or "", state.catalog, state.sources, max_join_contributions=settings.max_join_contributions
        )
    plan, dataset = resolved.plan, resolved.dataset
    audit.event.dataset = resolved.private[0]
    audit.event.query = plan.normalised()
    prepared = query_service.prepare(
        session,
        state.policy_engine,
        principal,
        plan=plan,
        dataset=dataset,
        purpose=body.purpose,
        epsilon=body.epsilon,
        accuracy=query_service.AccuracyTarget(body.accuracy.half_width, body.accuracy.confidence)
        if body.accuracy is not None
        else None,
        limits=query_service.QueryLimits(
            default_epsilon=settings.default_query_epsilon,
            max_epsilon=settings.max_query_epsilon,
            max_groups=settings.max_groups,
            default_delta=settings.default_query_delta,
            max_delta=settings.max_query_delta,
            max_join_contributions=settings.max_join_contributions,
        ),
        now=audit.started_at,
        delta=body.delta,
        sources=state.sources,  # a source that is not ready is refused here: before anything is spent
        budget=state.catalog.space_budget(resolved.private[0]),
        resolved=resolved,
        catalog=state.catalog,
    )
    audit.event.legal_basis = prepared.grant.legal_basis
    return prepared


@router.post(
    "/query",
    response_model=QueryResponse,
    summary="Answer an aggregate query with differential privacy",
    responses=_REFUSALS,
    dependencies=[Depends(audited_as(query_service.ACTION))],
)
def run_query(
    body: QueryRequest, principal: PrincipalDep, session: SessionDep, state: StateDep, audit: AuditDep
) -> Response:
    if body.sql is not None and public_only(body.sql, state.catalog):
        return _answer_public(body, principal, session, state, audit)
    # The budget is checked once, under the lock, by the reservation below (still before any read).
    prepared = prepare(body, principal, state, audit)
    spend_id, budget_after = reserve(session, prepared, principal, audit)
    answer = execute_reserved(session, state, audit, prepared, spend_id)
    payload = {
        "columns": answer.columns,
        "rows": answer.rows,
        "privacy": query_service.privacy_report(prepared, answer, budget_after, audit.started_at),
        "request_id": audit.request_id,
    }
    return respond_charged(
        session, state, audit, spend_id, payload, privacy_cost=prepared.epsilon, rows=len(answer.rows)
    )


def reserve(
    session: Session, prepared: query_service.PreparedQuery, principal: AuthenticatedPrincipal, audit: AuditContext
) -> tuple[int, budget_service.BudgetState]:
    """Reserve the cost under the ledger's lock and commit before the source is read: no state-database
    lock is held while the source computes, and concurrent queries cannot together pass the budget,
    whatever happens to them after the read."""
    spend_id, budget_after = query_service.reserve(
        session, prepared, principal, request_id=audit.request_id, now=audit.started_at
    )
    session.commit()
    # From here the reservation counts: whatever event this request ends with records its cost, unless
    # the reservation is handed back (respond_charged).
    audit.charged = prepared.epsilon
    return spend_id, budget_after


def execute_reserved(
    session: Session, state: GatewayState, audit: AuditContext, prepared: query_service.PreparedQuery, spend_id: int
) -> query_service.QueryAnswer:
    try:
        answer = query_service.execute(prepared, state.sources)
    except Exception as exc:
        # The source has been read, and a failure can depend on what it read: the reservation stays
        # spent, marked failed in the transaction of its event (if even that event cannot be written,
        # it stays reserved, and counts). The handler sees the event is written.
        budget_service.settle(session, spend_id, budget_service.FAILED)
        failure = audit.finish(
            decision="error",
            reason=getattr(exc, "code", "internal_error"),
            detail=getattr(exc, "message", "an unexpected error occurred; it has been logged"),
            privacy_cost=prepared.epsilon,
        )
        commit_with_event(session, audit, failure)
        raise
    budget_service.settle(session, spend_id, budget_service.RELEASED)
    return answer


def respond_charged(
    session: Session,
    state: GatewayState,
    audit: AuditContext,
    spend_id: int,
    payload: dict[str, Any],
    *,
    privacy_cost: float,
    rows: int,
    detail: str | None = None,
) -> Response:
    try:
        return respond(session, audit, payload, privacy_cost=privacy_cost, rows_released=rows, detail=detail)
    except AuditUnavailable:
        # Fail closed: the answer was ready but has no event, so it does not leave; only a 503 does,
        # whatever the data. Hand the reservation back (best effort: if the state database refuses this
        # too, it stays counted).
        if _cancel_reservation(state, spend_id):
            audit.charged = None
        raise


def _answer_public(
    body: QueryRequest, principal: AuthenticatedPrincipal, session: Session, state: GatewayState, audit: AuditContext
) -> Response:
    """Public tables alone: authorised per table for the purpose, answered exactly, nothing spent."""
    query, grants = _authorize_public(body, principal, state, audit)
    specs = {name: state.catalog.datasets[name] for name in query.datasets}
    tables = {name: (spec, state.sources.public.get(name, spec)) for name, spec in specs.items()}
    columns, rows = state.sources.run_public(query.sql, tables)
    payload = {
        "columns": columns,
        "rows": [[_json_value(value) for value in row] for row in rows],
        "privacy": {
            "definition": "public reference data: answered exactly, without noise; no budget is spent",
            "datasets": list(query.datasets),
            "epsilon_spent": 0.0,
            "delta_spent": 0.0,
            "legal_basis": grants[0].legal_basis,
        },
        "request_id": audit.request_id,
    }
    return respond(session, audit, payload, privacy_cost=0.0, rows_released=len(rows))


def _authorize_public(
    body: QueryRequest, principal: AuthenticatedPrincipal, state: GatewayState, audit: AuditContext
) -> tuple[PublicQuery, list[Grant]]:
    audit.event.purpose = body.purpose
    audit.event.query = body.sql
    query = plan_public(body.sql or "", state.catalog)
    audit.event.query = query.text
    audit.event.dataset = query.datasets[0]
    with state.sessions() as reader:
        read_snapshot(reader)
        grants = [
            authorize(
                reader, state.policy_engine, principal, dataset=name, action=query_service.ACTION,
                purpose=body.purpose, now=audit.started_at,
            )
            for name in query.datasets
        ]  # fmt: skip
        reader.commit()
    audit.event.legal_basis = grants[0].legal_basis
    return query, grants


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return float(value)
    return str(value)  # dates, as ISO text


def _cancel_reservation(state: GatewayState, spend_id: int) -> bool:
    try:
        with state.sessions() as refund:
            budget_service.cancel(refund, spend_id)
            refund.commit()
    except SQLAlchemyError:
        logger.exception("a reservation could not be handed back after an audit failure; it stays counted")
        return False
    return True


@router.post(
    "/query/estimate",
    response_model=EstimateResponse,
    summary="What a query would cost and how accurate it would be, without reading data or spending",
    responses=_REFUSALS,
    dependencies=[Depends(audited_as("aggregate:estimate"))],
)
def estimate_query(
    body: QueryRequest, principal: PrincipalDep, session: SessionDep, state: StateDep, audit: AuditDep
) -> Response:
    if body.sql is not None and public_only(body.sql, state.catalog):
        # Public tables are read exactly and for free: nothing to estimate but that.
        _authorize_public(body, principal, state, audit)
        free = {
            "epsilon": 0.0, "delta": 0.0, "confidence": query_service.CONFIDENCE, "aggregates": {},
            "group_selection": None, "budget": {"unit_space": None, "epsilon_remaining": None, "affordable": True},
            "request_id": audit.request_id,
        }  # fmt: skip
        return respond(session, audit, free)
    prepared = prepare(body, principal, state, audit)
    space = prepared.budget
    try:
        with state.sessions() as reader:
            read_snapshot(reader)
            remaining = _affordable(reader, prepared, principal, audit)
        affordable = True
    except BudgetExhausted as refused:
        remaining, affordable = refused.remaining, False
    payload = {
        "epsilon": prepared.epsilon,
        "delta": prepared.delta,
        "confidence": prepared.confidence,
        "aggregates": query_service.mechanism_report(prepared),
        "group_selection": query_service.selection_report(prepared),
        "budget": {"unit_space": space.unit_space, "epsilon_remaining": remaining, "affordable": affordable},
        "request_id": audit.request_id,
    }
    return respond(session, audit, payload)


def _affordable(
    session: Session, prepared: query_service.PreparedQuery, principal: AuthenticatedPrincipal, audit: AuditContext
) -> float:
    space = prepared.budget
    remaining = budget_service.check_affordable(
        session,
        prepared.grant,
        principal_id=principal.id,
        dataset=prepared.charged_dataset,
        unit_space=space.unit_space,
        caps=space.caps,
        epsilon=prepared.epsilon,
        now=audit.started_at,
        delta=prepared.delta,
    )
    # Every grant the principal holds in the space binds, as the reservation checks (query_service.reserve).
    for sibling in prepared.sibling_grants:
        state = budget_service.budget_state(
            session, sibling, principal_id=principal.id, unit_space=space.unit_space, caps=(), now=audit.started_at
        )
        left = state.principal_remaining
        if prepared.epsilon > left or prepared.delta > state.principal_delta_remaining:
            raise BudgetExhausted(
                f"more than is left under your grant {sibling.id} in unit space {space.unit_space!r}",
                remaining=left,
                requested=prepared.epsilon,
            )
        remaining = min(remaining, left)
    return remaining
