from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import text

from gateway.http.dependencies import StateDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness and state-database reachability")
def get_health(state: StateDep) -> dict[str, Any]:
    with state.engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    return {"status": "ok", "datasets": len(state.catalog.datasets)}
