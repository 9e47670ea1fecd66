"""``POST /v1/compare``: one DP question to this gemeente and to peer gateways, each answering itself.

The question is first prepared here as an ordinary query: a caller who may not ask it of this gemeente
asks no one. Its cost is reserved here; then the peers are asked in parallel while the local source is
read, each under its own policies, budget and audit log, with this request's ``traceparent`` (one trace
id across the organisations). The answer lists every gemeente with its values and what it spent, or why
it is missing; this request's audit event lists the peers asked, their request ids and outcomes.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from pydantic import Field

from gateway.exceptions import InvalidQuery
from gateway.federation.client import MAX_PEERS, PeerOutcome, PeerTarget, ask_all
from gateway.http.dependencies import AuditDep, PrincipalDep, SessionDep, StateDep, audited_as
from gateway.http.errors import ERROR_RESPONSES
from gateway.http.routers.query import QueryRequest, execute_reserved, prepare, reserve, respond_charged
from gateway.keys.peer_credentials import read_credential
from gateway.query import service as query_service
from gateway.state import GatewayState
from gateway.store.database import read_snapshot
from policies import peers as peer_register

router = APIRouter(prefix="/v1", tags=["query"], responses=ERROR_RESPONSES)


class CompareRequest(QueryRequest):
    peers: (
        Annotated[list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,63}$")]], Field(max_length=MAX_PEERS)] | None
    ) = Field(default=None, description="The peers to ask (default: every registered, enabled peer).")


def _targets(state: GatewayState, wanted: list[str] | None) -> list[PeerTarget]:
    with state.sessions() as reader:
        read_snapshot(reader)
        registered = {peer.name: peer for peer in peer_register.active_peers(reader)}
        reader.commit()
    names = list(dict.fromkeys(wanted)) if wanted is not None else sorted(registered)
    unknown = [name for name in names if name not in registered]
    if unknown:
        raise InvalidQuery(f"no enabled peer named {', '.join(unknown)}")
    targets = []
    for name in names[:MAX_PEERS]:
        peer = registered[name]
        if peer.tls == "plain_loopback" and not state.settings.allow_plain_loopback_peers:
            raise InvalidQuery(f"peer {name!r} is plain HTTP, which this gateway's settings do not allow")
        verify: bool | str = {"verify": True, "plain_loopback": False}.get(peer.tls, peer.ca_file or True)
        credential = read_credential(state.settings.data_dir, name)
        targets.append(PeerTarget(name, peer.gemeente, peer.url, verify, credential))
    return targets


def _peer_entry(outcome: PeerOutcome) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "gemeente": outcome.gemeente,
        "peer": outcome.name,
        "status": outcome.status,
        "request_id": outcome.request_id,
        "elapsed_ms": round(outcome.elapsed_ms, 1),
    }
    if outcome.answer is not None:
        privacy = outcome.answer.privacy
        entry.update(
            columns=outcome.answer.columns,
            rows=outcome.answer.rows,
            epsilon_spent=privacy.epsilon_spent,
            aggregates=_bounded(privacy.model_extra or {}, "aggregates"),
        )
    else:
        entry.update(error=outcome.error, detail=outcome.detail)
    return entry


def _bounded(extra: dict[str, Any], key: str) -> Any:
    """A peer's accuracy report, passed on only if it is small and plain JSON."""
    value = extra.get(key)
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return None
    return value if len(text) <= 100_000 else None


@router.post(
    "/compare",
    summary="Ask one DP question of this gemeente and of peer gateways, each under its own budget",
    responses={400: {}, 401: {}, 403: {}, 422: {}, 429: {}, 503: {}},
    dependencies=[Depends(audited_as("aggregate:compare"))],
)
def compare(
    body: CompareRequest, principal: PrincipalDep, session: SessionDep, state: StateDep, audit: AuditDep
) -> Response:
    prepared = prepare(body, principal, state, audit)  # refused here: no peer is asked
    targets = _targets(state, body.peers)  # after authorisation: no probing of the register
    spend_id, budget_after = reserve(session, prepared, principal, audit)
    question = body.model_dump(exclude={"peers"}, exclude_none=True, by_alias=True)
    settings = state.settings
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="datapoort-compare") as pool:
        asked = pool.submit(
            ask_all,
            targets,
            question,
            traceparent=audit.event.traceparent or "",
            timeout=settings.peer_timeout_seconds,
            max_bytes=settings.peer_max_answer_bytes,
        )
        answer = execute_reserved(session, state, audit, prepared, spend_id)
        outcomes = asked.result()
    local = {
        "gemeente": state.catalog.gemeente or settings.instance,
        "peer": None,
        "status": "answered",
        "request_id": audit.request_id,
        "columns": answer.columns,
        "rows": answer.rows,
        "epsilon_spent": prepared.epsilon,
        "privacy": query_service.privacy_report(prepared, answer, budget_after, audit.started_at),
    }
    payload = {
        "gemeenten": [local, *(_peer_entry(outcome) for outcome in outcomes)],
        "trace_id": (audit.event.traceparent or "").split("-")[1] if audit.event.traceparent else None,
        "request_id": audit.request_id,
    }
    detail = json.dumps({"peers": [outcome.summary() for outcome in outcomes]})
    return respond_charged(
        session, state, audit, spend_id, payload, privacy_cost=prepared.epsilon, rows=len(answer.rows), detail=detail
    )
