"""``/v1/admin/datasets``: the catalog's datasets added, changed and removed without a restart.

An ``admin`` grant on ``register`` decides (the catalog is the gemeente's, not an organisation's); the
privacy officer's oversight may list. Each change is one audit event with the dataset's entry before and
after, committed with the change; this process follows at once, the others within their poll interval.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from fastapi import Path as FastApiPath
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from gateway.audit_trail import AuditContext, describe_change
from gateway.data import catalog_changes
from gateway.data.catalog import resolved_entry
from gateway.http.dependencies import AuditDep, PrincipalDep, SessionDep, StateDep, audited_as
from gateway.http.errors import ERROR_RESPONSES
from gateway.http.responses import respond
from gateway.state import GatewayState
from gateway.store.database import read_snapshot
from policies import catalog_changes as recorded_changes
from policies import management
from policies.service import AuthenticatedPrincipal

router = APIRouter(prefix="/v1/admin/datasets", tags=["admin"], responses=ERROR_RESPONSES)
_REFUSALS: dict[int | str, dict[str, Any]] = {400: {}, 401: {}, 403: {}, 404: {}, 409: {}, 422: {}}
DatasetName = Annotated[str, FastApiPath(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
READ = [Depends(audited_as("admin:read"))]
WRITE = [Depends(audited_as("admin"))]


class DatasetEntry(BaseModel):
    """A dataset as the catalog file describes one under ``datasets:`` (paths relative to the catalog)."""

    model_config = ConfigDict(extra="forbid")
    entry: dict[str, Any] = Field(description="source, privacy_unit, unit_space, max_contributions, columns, ...")


class DatasetCreate(DatasetEntry):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")


def _authorise(
    session: Session, state: GatewayState, principal: AuthenticatedPrincipal, audit: AuditContext, *, read: bool
) -> None:
    read_snapshot(session)  # decided and validated without a write lock; the change is written at the end
    management.require_admin(
        session, state.policy_engine, principal, management.REGISTER, now=audit.started_at, read_only=read
    )


def _change(
    session: Session,
    state: GatewayState,
    principal: AuthenticatedPrincipal,
    audit: AuditContext,
    name: str,
    entry: dict[str, Any] | None,
    *,
    expect: str,
    status_code: int = 200,
) -> Response:
    """Decide first, then resolve and validate the entry in a read-only snapshot (the ingestion writes
    its own event meanwhile), then record the change and its event in one short write transaction."""
    _authorise(session, state, principal, audit, read=False)
    file_catalog = state.file_catalog or state.catalog
    guard = catalog_changes.guard_for(state.settings, file_catalog)
    if entry is not None:
        entry = resolved_entry(name, entry, state.settings.catalog_path.parent, readable=guard.readable)
    context = catalog_changes.CatalogContext(
        file_catalog=file_catalog,
        snapshots=state.sources.snapshots,
        sessions=state.sessions,
        actor=principal.id,
        instance=state.settings.instance,
        guard=guard,
    )
    prepared = catalog_changes.prepare_change(session, context, name, entry, expect=expect)
    session.commit()  # the snapshot ends: it cannot take the write
    catalog_changes.record(session, prepared, actor=principal.id, now=audit.started_at)
    change = prepared.change
    detail = describe_change(audit, change)
    response = respond(session, audit, change.describe(), detail=detail, status_code=status_code)
    with state.sessions() as fresh:
        state.follow_changes(fresh, force=True)
    return response


@router.get("", dependencies=READ, responses=_REFUSALS, summary="The catalog's datasets in effect and its version")
def list_catalog_datasets(principal: PrincipalDep, session: SessionDep, state: StateDep, audit: AuditDep) -> Response:
    _authorise(session, state, principal, audit, read=True)
    catalog = catalog_changes.current(session, state.file_catalog or state.catalog)
    datasets = [
        {"name": name, **(catalog_changes.describe(spec) or {})} for name, spec in sorted(catalog.datasets.items())
    ]
    payload = {"catalog_version": recorded_changes.latest_version(session), "datasets": datasets}
    return respond(session, audit, payload, rows_released=len(datasets))


@router.post(
    "", dependencies=WRITE, responses=_REFUSALS, status_code=201, summary="Add a dataset: validated, ingested, live"
)
def add_dataset(
    body: DatasetCreate, principal: PrincipalDep, session: SessionDep, state: StateDep, audit: AuditDep
) -> Response:
    return _change(session, state, principal, audit, body.name, body.entry, expect="new", status_code=201)


@router.put("/{name}", dependencies=WRITE, responses=_REFUSALS, summary="Replace a dataset's catalog entry")
def update_dataset(
    name: DatasetName,
    body: DatasetEntry,
    principal: PrincipalDep,
    session: SessionDep,
    state: StateDep,
    audit: AuditDep,
) -> Response:
    return _change(session, state, principal, audit, name, body.entry, expect="existing")


@router.delete("/{name}", dependencies=WRITE, responses=_REFUSALS, summary="Remove a dataset from the catalog")
def remove_dataset(
    name: DatasetName, principal: PrincipalDep, session: SessionDep, state: StateDep, audit: AuditDep
) -> Response:
    return _change(session, state, principal, audit, name, None, expect="existing")
