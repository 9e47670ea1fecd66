from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from gateway.exceptions import GatewayError
from gateway.http.dependencies import StateDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers (no database, no lock)")
async def get_health() -> dict[str, Any]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: the state database takes writes, every dataset can be read, the signing key is loaded",
    responses={503: {"description": "Not ready; the body says which part"}},
)
def get_ready(state: StateDep) -> JSONResponse:
    problems: dict[str, str] = {}
    try:
        with state.sessions() as session:
            # A write that is rolled back: a read-only PostgreSQL or a full SQLite disk fails here.
            session.execute(text("CREATE TEMPORARY TABLE datapoort_ready (x INTEGER)"))
            session.rollback()
    except SQLAlchemyError:
        problems["state_database"] = "does not take writes"
    for name, dataset in state.catalog.datasets.items():
        if "aggregate" not in dataset.actions:
            continue
        try:
            if dataset.public:
                state.sources.public.get(name, dataset)
            else:
                state.sources.relation_for(name, dataset)
        except GatewayError:
            problems[f"dataset:{name}"] = "not readable (no current snapshot, or the database does not answer)"
    if state.settings.signing_key_file is None:
        problems["audit_signing_key"] = "not configured: a cut end of the audit log cannot be detected"
    status = 503 if problems else 200
    return JSONResponse({"status": "ready" if not problems else "not_ready", "problems": problems}, status_code=status)
