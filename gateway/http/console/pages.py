"""The console's pages: the privacy officer's review of the log, budgets, grants and inzage, in a browser.

Each page reads what the matching ``/v1/audit`` or ``/v1/admin`` call reads, after the same decision on the
officer's grants, and is an audit event of the same action, committed before the page is sent. The pages
only read; the one form that asks something (inzage) is a POST with the session's CSRF token, so a BSN
never appears in a URL, a browser history or a proxy log.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from audit import review
from audit.models import AuditCheckpoint
from gateway.audit_trail import commit_with_event
from gateway.exceptions import InvalidQuery, NotFound
from gateway.http.console.auth import CsrfField, OfficerDep, check_form
from gateway.http.console.charts import Limit, Series, bar_chart, step_chart
from gateway.http.console.rendering import page, redirect
from gateway.http.dependencies import AuditDep, SessionDep, StateDep, audited_as
from gateway.http.routers.audit import ExportFormat, exported, oversee, verified_log
from gateway.http.routers.extract import subject_extracts
from gateway.state import GatewayState
from policies import budget as budget_service
from policies import management

router = APIRouter(prefix="/console", include_in_schema=False)
PAGE_SIZE = 50
REIDENTIFICATIONS_SHOWN = 200
"""The latest re-identifications on the grants page; all of them are in the events (action reidentify)."""
Text = Annotated[str, Query(max_length=128)]


def _base(officer: Any, nav: str) -> dict[str, Any]:
    return {"officer": officer.principal, "csrf_token": officer.csrf_token, "nav": nav}


# The dashboard


@dataclass(frozen=True, slots=True)
class ChainCheck:
    """The latest verification of the whole chain in this process: a long log takes seconds to verify,
    too long to repeat at every view of the overview (``DATAPOORT_CONSOLE_VERIFY_SECONDS``)."""

    report: dict[str, Any]
    verified_at: datetime


def _chain_state(request: Request, state: GatewayState, now: datetime, *, fresh: bool) -> dict[str, Any]:
    cached: ChainCheck | None = getattr(request.app.state, "console_chain_check", None)
    if (
        not fresh
        and cached is not None
        and now - cached.verified_at < timedelta(seconds=state.settings.console_verify_seconds)
    ):
        return {**cached.report, "verified_at": cached.verified_at}
    verified, latest = verified_log(state)
    report = {
        **verified,
        "latest_signed": None
        if latest is None
        else {"sequence": latest.sequence, "signed_at": latest.signed_at, "key_id": latest.key_id},
    }
    request.app.state.console_chain_check = ChainCheck(report, now)
    return {**report, "verified_at": now}


@router.post("/verify", dependencies=[Depends(audited_as("audit:verify"))])
def verify_now(
    request: Request,
    officer: OfficerDep,
    session: SessionDep,
    state: StateDep,
    audit: AuditDep,
    csrf_token: CsrfField = None,
) -> Response:
    check_form(officer, csrf_token)
    oversee(session, state, officer.principal, audit)
    audit.event.query = "console: verify the chain now"
    chain = _chain_state(request, state, audit.started_at, fresh=True)
    outcome = "intact" if chain["ok"] else f"broken at {chain['first_broken_sequence']}"
    commit_with_event(session, audit, audit.finish(decision="allow", detail=f"chain {outcome}"))
    return redirect("/console")


@router.get("", dependencies=[Depends(audited_as("audit:verify"))])
def dashboard(request: Request, officer: OfficerDep, session: SessionDep, state: StateDep, audit: AuditDep) -> Response:
    oversee(session, state, officer.principal, audit)
    audit.event.query = "console dashboard: the chain verified, today's requests, refusals and budget use"
    chain = _chain_state(request, state, audit.started_at, fresh=False)
    today = datetime.combine(audit.started_at.date(), time(), UTC)
    decisions = review.decisions_since(session, today)
    refusals = review.denial_summary(session, review.EventFilter(since=today))
    by_reason: dict[str, int] = defaultdict(int)
    for row in refusals:
        by_reason[str(row["reason"])] += int(row["count"])
    usage = budget_service.usage(session, since=today)
    spent: dict[str, float] = defaultdict(float)
    for row in usage:
        spent[str(row["unit_space"])] += float(row["epsilon"])  # type: ignore[arg-type]
    return page(
        session,
        audit,
        "dashboard.html",
        **_base(officer, "dashboard"),
        chain=chain,
        today=today,
        decisions=decisions,
        requests=sum(decisions.values()),
        refusals_chart=bar_chart(sorted(by_reason.items(), key=lambda item: -item[1])[:8], title="Weigeringen vandaag"),
        spent_today=sorted(spent.items()),
        epsilon_today=review.privacy_cost_since(session, today),
    )


# Events


def _day(value: str | None, name: str) -> date | None:
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise InvalidQuery(f"{name}: give a date as YYYY-MM-DD") from None
    if day.year > 9000:  # a day after the last one a datetime can hold
        raise InvalidQuery(f"{name}: give a date before the year 9000")
    return day


def console_filter(
    since: Text = "",
    until: Text = "",
    principal_id: Text = "",
    organisation: Text = "",
    dataset: Text = "",
    purpose: Text = "",
    action: Annotated[str, Query(max_length=64)] = "",
    decision: Annotated[str, Query(pattern="^(|allow|deny|error)$")] = "",
) -> review.EventFilter:
    """The filters of ``/v1/audit/events`` as a form sends them: empty fields mean no filter, and days are
    whole UTC days (``until`` includes its day)."""
    first, last = _day(since, "since"), _day(until, "until")
    return review.EventFilter(
        since=datetime.combine(first, time(), UTC) if first else None,
        until=datetime.combine(last + timedelta(days=1), time(), UTC) if last else None,
        principal_id=principal_id or None,
        organisation=organisation or None,
        dataset=dataset or None,
        purpose=purpose or None,
        action=action or None,
        decision=decision or None,
    )


ConsoleFilter = Annotated[review.EventFilter, Depends(console_filter)]


def _form_values(where: review.EventFilter) -> dict[str, str]:
    values = {name: str(getattr(where, name) or "") for name in review.EventFilter.__dataclass_fields__}
    values["since"] = where.since.date().isoformat() if where.since else ""
    values["until"] = (where.until - timedelta(days=1)).date().isoformat() if where.until else ""
    return values


@router.get("/events", dependencies=[Depends(audited_as("audit:read"))])
def events(
    where: ConsoleFilter,
    officer: OfficerDep,
    session: SessionDep,
    state: StateDep,
    audit: AuditDep,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> Response:
    oversee(session, state, officer.principal, audit)
    audit.event.query = f"events {where.describe()} after {after} limit {PAGE_SIZE}"
    found, cursor = review.page(session, where, after=after, limit=PAGE_SIZE)
    values = _form_values(where)
    selection = {name: value for name, value in values.items() if value}
    return page(
        session,
        audit,
        "events.html",
        rows_released=len(found),
        **_base(officer, "events"),
        events=found,
        filters=values,
        selection=selection,
        after=after,
        cursor=cursor,
    )


@router.get("/events/export", dependencies=[Depends(audited_as("audit:export"))])
def export(
    where: ConsoleFilter,
    officer: OfficerDep,
    session: SessionDep,
    state: StateDep,
    audit: AuditDep,
    format: Annotated[ExportFormat, Query()] = "csv",
) -> StreamingResponse:
    oversee(session, state, officer.principal, audit)
    return exported(session, state, audit, where, format)


def _covering_checkpoint(session: Session, sequence: int) -> AuditCheckpoint | None:
    statement = select(AuditCheckpoint).where(AuditCheckpoint.sequence >= sequence)
    return session.scalars(statement.order_by(AuditCheckpoint.sequence).limit(1)).first()


@router.get("/events/{sequence}", dependencies=[Depends(audited_as("audit:read"))])
def event(
    sequence: Annotated[int, Path(ge=1, le=2**62)],
    officer: OfficerDep,
    session: SessionDep,
    state: StateDep,
    audit: AuditDep,
) -> Response:
    oversee(session, state, officer.principal, audit)
    audit.event.query = f"event {sequence} and its trace"
    record = review.event_at(session, sequence)
    if record is None:
        raise NotFound(f"the log holds no event {sequence}")
    trace_id = review.trace_id_of(record.get("traceparent"))
    trace = review.trace_events(session, trace_id) if trace_id else []
    covering = _covering_checkpoint(session, sequence)
    return page(
        session,
        audit,
        "event.html",
        rows_released=max(1, len(trace)),  # the trace holds the event itself
        **_base(officer, "events"),
        record=record,
        trace_id=trace_id,
        trace=trace,
        checkpoint=covering,
        detail=_pretty(record.get("detail")),
        query=_pretty(record.get("query")),
    )


def _pretty(text: Any) -> str | None:
    """JSON (a change's before and after, a plan) indented for reading; any other text as it is."""
    if not isinstance(text, str) or not text.startswith(("{", "[")):
        return text if isinstance(text, str) else None
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False, sort_keys=True)
    except ValueError:
        return text


# Budgets


def _budget_charts(session: Session, state: GatewayState, now: datetime, spaces: list[str]) -> list[dict[str, Any]]:
    """Per unit space: everyone's cumulative spend this period (what its cap bounds) split by dataset and
    by principal, with the space's caps as lines."""
    charts = []
    for space in spaces:
        example = state.catalog.datasets_in(space)[0] if state.catalog.datasets_in(space) else None
        caps = state.catalog.space_budget(example).caps if example else ()
        period = caps[0].period if caps else "month"
        start = budget_service.period_start(period, now) if period != "lifetime" else now - timedelta(days=365)
        by_dataset: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
        by_principal: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
        total: list[tuple[datetime, float]] = []
        running: dict[str, float] = defaultdict(float)
        everyone = 0.0
        for point in budget_service.spends_between(session, since=start, until=now, unit_space=space):
            everyone += point.epsilon
            total.append((point.spent_at, everyone))
            running["d:" + point.dataset] += point.epsilon
            by_dataset[point.dataset].append((point.spent_at, running["d:" + point.dataset]))
            running["p:" + point.principal_id] += point.epsilon
            by_principal[point.principal_id].append((point.spent_at, running["p:" + point.principal_id]))
        limits = [Limit(f"cap per {cap.period}", cap.epsilon) for cap in caps if cap.period == period]
        end = max(now, start + timedelta(days=1))
        charts.append(
            {
                "unit_space": space,
                "period": period,
                "since": start,
                "spent": everyone,
                "caps": caps,
                "datasets": step_chart(
                    [Series("iedereen", total), *(Series(name, points) for name, points in sorted(by_dataset.items()))],
                    limits,
                    start=start,
                    end=end,
                    title=f"ε besteed in {space} per dataset sinds {start:%Y-%m-%d}",
                ),
                "principals": step_chart(
                    [Series(name, points) for name, points in sorted(by_principal.items())],
                    limits,
                    start=start,
                    end=end,
                    title=f"ε besteed in {space} per principal sinds {start:%Y-%m-%d}",
                ),
            }
        )
    return charts


@router.get("/budget", dependencies=[Depends(audited_as("audit:read"))])
def budget(
    officer: OfficerDep,
    session: SessionDep,
    state: StateDep,
    audit: AuditDep,
    principal_id: Text = "",
    unit_space: Text = "",
    dataset: Text = "",
) -> Response:
    oversee(session, state, officer.principal, audit)
    audit.event.query = f"budget use principal_id={principal_id} unit_space={unit_space} dataset={dataset}"
    rows = budget_service.usage(
        session, principal_id=principal_id or None, unit_space=unit_space or None, dataset=dataset or None
    )
    private = [name for name, spec in state.catalog.datasets.items() if not spec.public]
    spaces = sorted({state.catalog.unit_space_of(name) for name in private})
    if unit_space:
        spaces = [space for space in spaces if space == unit_space]
    return page(
        session,
        audit,
        "budget.html",
        rows_released=len(rows),
        **_base(officer, "budget"),
        charts=_budget_charts(session, state, audit.started_at, spaces),
        usage=rows,
        filters={"principal_id": principal_id, "unit_space": unit_space, "dataset": dataset},
    )


# Grants, refusals and re-identifications


def _reidentifications(session: Session) -> list[dict[str, Any]]:
    found = review.newest(session, review.EventFilter(action="reidentify"), limit=REIDENTIFICATIONS_SHOWN)
    for record in found:
        try:
            asked = json.loads(record.get("query") or "{}")
        except ValueError:
            asked = {}
        record["justification"] = asked.get("justification") if isinstance(asked, dict) else None
    return found


@router.get("/grants", dependencies=[Depends(audited_as("admin:read"))])
def grants(
    officer: OfficerDep,
    session: SessionDep,
    state: StateDep,
    audit: AuditDep,
    include_inactive: Annotated[bool, Query()] = False,
) -> Response:
    management.require_admin(
        session, state.policy_engine, officer.principal, management.REGISTER, now=audit.started_at, read_only=True
    )
    oversee(session, state, officer.principal, audit)  # the refusals and re-identifications are the log's
    audit.event.query = f"grants include_inactive={include_inactive}, refusals by reason, re-identifications"
    listed = management.list_grants(
        session, management.GrantFilter(include_inactive=include_inactive, now=audit.started_at)
    )
    refusals = review.denial_summary(session, review.EventFilter())
    reidentifications = _reidentifications(session)
    return page(
        session,
        audit,
        "grants.html",
        rows_released=len(listed) + len(refusals) + len(reidentifications),
        **_base(officer, "grants"),
        grants=listed,
        deny_rules=management.list_deny_rules(session, None),
        refusals=refusals,
        reidentifications=reidentifications,
        include_inactive=include_inactive,
    )


# Inzage


@router.get("/inzage", dependencies=[Depends(audited_as("audit:read"))])
def inzage_form(officer: OfficerDep, session: SessionDep, state: StateDep, audit: AuditDep) -> Response:
    oversee(session, state, officer.principal, audit)
    audit.event.query = "inzage form"
    return page(session, audit, "inzage.html", **_base(officer, "inzage"), result=None)


@router.post("/inzage", dependencies=[Depends(audited_as("audit:read"))])
def inzage(
    officer: OfficerDep,
    session: SessionDep,
    state: StateDep,
    audit: AuditDep,
    bsn: Annotated[str, Form(pattern=r"^[0-9]{8,9}$")],
    csrf_token: CsrfField = None,
) -> Response:
    check_form(officer, csrf_token)
    oversee(session, state, officer.principal, audit)
    result = subject_extracts(session, state, audit, bsn=bsn, privacy_unit_id=None)
    return page(
        session,
        audit,
        "inzage.html",
        rows_released=len(result["extracts"]),
        **_base(officer, "inzage"),
        result=result,
        asked_at=audit.started_at,
        bsn_shown=f"•••••{bsn[-4:]}",
    )
