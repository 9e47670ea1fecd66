"""Adding, changing and removing a dataset while the gateway runs (the CLI and ``/v1/admin/datasets``).

A change is validated as the whole catalog it makes (types, bounds, public keys, unit spaces, the person
register), its file is ingested into a verified snapshot (the privacy checks of ``gateway.data.snapshots``,
a value that would lose precision in its type refusing the change), and only then recorded, in the
caller's transaction, with the audit event that describes it (before and after). Every process takes the
new version within its poll interval; nothing restarts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from gateway.data.catalog import Catalog, DatasetSpec, with_changes
from gateway.data.ingestion import ingest_catalog, snapshot_datasets
from gateway.data.snapshots import SnapshotStore
from gateway.exceptions import InvalidDatasetChange
from policies import catalog_changes
from policies.exceptions import PolicyConflict, UnknownObject
from policies.management import REGISTER, Change


@dataclass(frozen=True, slots=True)
class CatalogContext:
    """What a change needs: the catalog file's catalog, the snapshots, and who makes it."""

    file_catalog: Catalog
    snapshots: SnapshotStore | None
    sessions: sessionmaker[Session]
    actor: str
    instance: str


def current(session: Session, file_catalog: Catalog) -> Catalog:
    _, entries = catalog_changes.overrides(session)
    return with_changes(file_catalog, entries)


def describe(spec: DatasetSpec | None) -> dict[str, Any] | None:
    return None if spec is None else spec.model_dump(mode="json", exclude_unset=True)


@dataclass(frozen=True, slots=True)
class PreparedChange:
    change: Change
    dataset: str
    entry: str | None
    """What is recorded: the dataset's entry as JSON, ``None`` for its removal."""


def prepare_change(
    context: CatalogContext,
    entries: dict[str, str | None],
    name: str,
    entry: dict[str, Any] | None,
    *,
    expect: str,
) -> PreparedChange:
    """Validate and ingest adding (``expect="new"``), updating (``"existing"``) or removing
    (``entry=None``) dataset ``name`` against the recorded ``entries`` (``catalog_changes.overrides``).
    ``entry`` is a dataset's catalog entry with absolute paths (see ``catalog.resolved_entry``). Writes
    nothing but the ingestion's own audit event: the caller records the change (``record``) with its event."""
    if entry is not None:
        try:
            json.dumps(entry)
        except (TypeError, ValueError) as exc:
            raise InvalidDatasetChange("the dataset entry must be plain JSON") from exc
    before = with_changes(context.file_catalog, entries).datasets.get(name)
    if expect == "new" and before is not None:
        raise PolicyConflict(f"dataset {name!r} exists; update it instead")
    if expect == "existing" and before is None:
        raise UnknownObject(f"no dataset {name!r}")
    changed = {**entries, name: json.dumps(entry, sort_keys=True) if entry is not None else None}
    after_catalog = with_changes(context.file_catalog, changed)  # the whole catalog, validated
    after = after_catalog.datasets.get(name)
    if after is not None and name in snapshot_datasets(after_catalog):
        _ingest(context, after_catalog, name)
    what = "dataset.remove" if entry is None else ("dataset.add" if before is None else "dataset.update")
    change = Change(what, f"dataset:{name}", describe(before), describe(after), REGISTER)
    return PreparedChange(change, name, changed[name])


def record(session: Session, prepared: PreparedChange, *, actor: str, now: datetime) -> None:
    catalog_changes.record(session, prepared.dataset, prepared.entry, actor=actor, now=now)


def _ingest(context: CatalogContext, catalog: Catalog, name: str) -> None:
    if context.snapshots is None:
        return
    (outcome,) = ingest_catalog(
        context.snapshots, catalog, context.sessions, actor=context.actor, instance=context.instance, names=[name]
    )
    if outcome.error is not None:
        raise InvalidDatasetChange(f"dataset {name!r} could not be ingested: {outcome.error}")
