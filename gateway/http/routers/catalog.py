from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from gateway.data import catalog_view
from gateway.http.dependencies import AuditDep, PrincipalDep, SessionDep, StateDep, audited_as
from gateway.http.errors import ERROR_RESPONSES
from gateway.http.responses import respond
from gateway.store.database import read_snapshot

router = APIRouter(prefix="/v1", tags=["catalog"], responses=ERROR_RESPONSES)


@router.get(
    "/datasets",
    summary="The datasets you may use, with their privacy settings",
    dependencies=[Depends(audited_as("catalog:read"))],
)
def list_datasets(principal: PrincipalDep, session: SessionDep, state: StateDep, audit: AuditDep) -> Response:
    read_snapshot(session)  # reads without the write lock; the event is written on its own afterwards
    visible = catalog_view.visible_grants(session, state.policy_engine, principal, state.catalog, audit.started_at)
    datasets = [
        catalog_view.describe(
            name, state.catalog.datasets[name], grants, detail=False, budget=state.catalog.space_budget(name)
        )
        for name, grants in sorted(visible.items())
    ]
    return respond(session, audit, {"datasets": datasets}, rows_released=len(datasets))


@router.get(
    "/datasets/{name}",
    summary="One dataset: columns, kinds, bounds, public keys and what can be asked of each",
    responses={404: {}},
    dependencies=[Depends(audited_as("catalog:read"))],
)
def get_dataset(name: str, principal: PrincipalDep, session: SessionDep, state: StateDep, audit: AuditDep) -> Response:
    audit.event.dataset = name[:128]
    read_snapshot(session)
    visible = catalog_view.visible_grants(session, state.policy_engine, principal, state.catalog, audit.started_at)
    dataset, grants = catalog_view.dataset_or_404(visible, state.catalog, name)
    view = catalog_view.describe(name, dataset, grants, detail=True, budget=state.catalog.space_budget(name))
    return respond(session, audit, view, rows_released=1)


@router.get(
    "/budget",
    summary="Your privacy budgets per unit space: allowance, spent and remaining this period, and the space's caps",
    dependencies=[Depends(audited_as("budget:read"))],
)
def get_budget(principal: PrincipalDep, session: SessionDep, state: StateDep, audit: AuditDep) -> Response:
    read_snapshot(session)
    visible = catalog_view.visible_grants(session, state.policy_engine, principal, state.catalog, audit.started_at)
    entries = catalog_view.budgets(session, principal, visible, state.catalog, audit.started_at)
    return respond(session, audit, {"budgets": entries}, rows_released=len(entries))
