"""``/v1/extracts`` (partners: pseudonymised, k-anonymous record-level extracts), ``/v1/reidentify`` (the
privacy officer, one pseudonym at a time, with a written justification) and ``/v1/audit/subjects``
(inzage: which extracts held a person)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Generator
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Depends, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema
from sqlalchemy.orm import Session

from gateway.audit_trail import AuditContext, commit_with_event
from gateway.exceptions import InvalidExtract
from gateway.extract import service as extract_service
from gateway.extract.formats import MEDIA_TYPES
from gateway.http.dependencies import AuditDep, PrincipalDep, SessionDep, StateDep, audited_as
from gateway.http.errors import ERROR_RESPONSES
from gateway.http.responses import respond
from gateway.http.routers.audit import oversee
from gateway.query.json_frontend import Condition, condition_expression, measure_condition
from gateway.query.sql_frontend import check_nesting
from gateway.state import GatewayState
from policies import service as policy_service

router = APIRouter(prefix="/v1", tags=["extract"], responses=ERROR_RESPONSES)
_REFUSALS: dict[int | str, dict[str, Any]] = {400: {}, 401: {}, 403: {}, 404: {}, 422: {}, 503: {}}
Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
Purpose = Annotated[str, Field(min_length=1, max_length=128)]


class ExtractRequest(BaseModel):
    """``where`` has the JSON query plan's grammar; it may only use the columns the purpose releases."""

    model_config = ConfigDict(extra="forbid")

    dataset: Name
    purpose: Purpose
    columns: Annotated[list[Name], Field(min_length=1, max_length=64)]
    where: Condition | None = None
    format: Literal["csv", "jsonl", "parquet"] = "csv"

    @model_validator(mode="before")
    @classmethod
    def _not_too_deep(cls, raw: object) -> object:
        if isinstance(raw, dict) and "where" in raw:
            check_nesting(*measure_condition(raw["where"]))
        return raw

    def normalised(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)


async def _closing(iterator: Generator[bytes, None, None]) -> AsyncIterator[bytes]:
    """Each chunk made on a worker thread of this stream's own. When the client goes away (Starlette
    cancels the response) the generator is closed, which stops the source's cursor and records what was
    sent; on the same thread, that close waits for a chunk still being made instead of failing with
    "generator already executing"."""
    loop = asyncio.get_running_loop()
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="extract")
    try:
        while (chunk := await loop.run_in_executor(worker, next, iterator, None)) is not None:
            yield chunk
    finally:
        with anyio.CancelScope(shield=True):
            await loop.run_in_executor(worker, iterator.close)
        worker.shutdown(wait=False)


@router.post(
    "/extracts",
    responses=_REFUSALS,
    summary="A pseudonymised, generalised, k-anonymous record-level extract, streamed",
    dependencies=[Depends(audited_as("export"))],
)
def create_extract(
    body: ExtractRequest, principal: PrincipalDep, session: SessionDep, state: StateDep, audit: AuditDep
) -> StreamingResponse:
    audit.event.dataset, audit.event.purpose, audit.event.query = body.dataset, body.purpose, body.normalised()
    try:
        where = condition_expression(body.where) if body.where is not None else None
    except RecursionError as exc:  # pragma: no cover - the nesting check keeps conditions far from this
        raise InvalidExtract("the condition is nested too deeply") from exc
    prepared = extract_service.prepare_extract(
        session,
        state,
        principal,
        audit,
        dataset_name=body.dataset,
        purpose=body.purpose,
        columns=body.columns,
        where=where,
        format=body.format,
    )
    extract_service.record_extract(session, prepared, audit, principal)
    # Authorised, counted and recorded before the first byte leaves; the stream's digest follows in a
    # second event when it ends.
    opening = audit.finish(
        decision="allow", detail=json.dumps(prepared.summary()), rows_released=prepared.records_released
    )
    commit_with_event(session, audit, opening)
    headers = {
        **prepared.headers(),
        "Content-Disposition": f'attachment; filename="{body.dataset}-{prepared.extract_id}.{body.format}"',
    }
    return StreamingResponse(
        _closing(extract_service.stream_extract(state, prepared, opening)),
        media_type=MEDIA_TYPES[body.format],
        headers=headers,
    )


class ReidentifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pseudonym: str = Field(pattern=r"^[A-Za-z2-7]{32}$")
    dataset: Name
    purpose: Purpose
    justification: str = Field(
        min_length=20, max_length=4000, description="Why this person must be known: recorded in the audit log."
    )


@router.post(
    "/reidentify",
    responses=_REFUSALS,
    summary="The identifier behind one pseudonym an extract released (privacy officer, justified)",
    dependencies=[Depends(audited_as("reidentify"))],
)
def reidentify_pseudonym(
    body: ReidentifyRequest, principal: PrincipalDep, session: SessionDep, state: StateDep, audit: AuditDep
) -> Response:
    audit.event.dataset, audit.event.purpose = body.dataset, body.purpose
    # In the query field, which a refusal keeps: the justification is recorded either way.
    audit.event.query = json.dumps({"reidentify": body.pseudonym.lower(), "justification": body.justification})
    audit.event.data_subject_id, audit.event.data_subject_type = body.pseudonym.lower(), "pseudonym"
    grant = policy_service.authorize(
        session,
        state.policy_engine,
        principal,
        dataset=body.dataset,
        action="reidentify",
        purpose=body.purpose,
        now=audit.started_at,
    )
    audit.event.legal_basis = grant.legal_basis
    found = extract_service.reidentify(session, state, pseudonym=body.pseudonym.lower(), dataset_name=body.dataset)
    payload = {
        "pseudonym": body.pseudonym.lower(),
        "privacy_unit": found.privacy_unit,
        "identifier": found.identifier,
        "extracts": found.extracts,
    }
    # No digest of this answer in the log: its one unknown, the identifier, comes from a space small enough
    # (BSNs, person numbers) that anyone reading the log could find it by trying them all.
    return respond(session, audit, payload, rows_released=1, digest=False)


class SubjectRequest(BaseModel):
    """Exactly one of ``bsn`` (looked up in the catalog's person register) and ``privacy_unit_id``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"required": ["bsn"], "not": {"required": ["privacy_unit_id"]}},
                {"required": ["privacy_unit_id"], "not": {"required": ["bsn"]}},
            ]
        },
    )

    bsn: Annotated[str, Field(pattern=r"^[0-9]{8,9}$")] | SkipJsonSchema[None] = None
    privacy_unit_id: Annotated[str, Field(min_length=1, max_length=128)] | SkipJsonSchema[None] = None

    @model_validator(mode="after")
    def _one_identifier(self) -> SubjectRequest:
        if (self.bsn is None) == (self.privacy_unit_id is None):
            raise ValueError("give exactly one of 'bsn' and 'privacy_unit_id'")
        return self


@router.post(
    "/audit/subjects/extracts",
    responses=_REFUSALS,
    summary="Inzage (AVG art. 15): the extracts that released records of one person",
    dependencies=[Depends(audited_as("audit:read"))],
)
def extracts_of_subject(
    body: SubjectRequest, principal: PrincipalDep, session: SessionDep, state: StateDep, audit: AuditDep
) -> Response:
    oversee(session, state, principal, audit)
    payload = subject_extracts(session, state, audit, bsn=body.bsn, privacy_unit_id=body.privacy_unit_id)
    return respond(session, audit, payload, rows_released=len(payload["extracts"]))


def subject_extracts(
    session: Session, state: GatewayState, audit: AuditContext, *, bsn: str | None, privacy_unit_id: str | None
) -> dict[str, Any]:
    """An inzage's findings (API and console alike), the person named in the event only by a pseudonym."""
    audit.event.query = "inzage: extracts of one person"  # never the BSN itself
    identifiers = [privacy_unit_id] if privacy_unit_id else extract_service.persons_for_bsn(state, bsn or "")
    if identifiers:
        audit.event.data_subject_id = extract_service.subject_pseudonym(state, identifiers[0])
        audit.event.data_subject_type = "pseudonym:inzage"
    found, unknown = extract_service.extracts_of_subject(session, state, identifiers)
    # Extracts whose stream never recorded its end (a crash) may hold the person: shown, never hidden.
    return {"persons_found": len(identifiers), "extracts": found, "extracts_without_record": unknown}
