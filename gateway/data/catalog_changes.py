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
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from gateway.data.catalog import Catalog, DatasetSpec, with_changes
from gateway.data.ingestion import ingest_catalog, snapshot_datasets
from gateway.data.snapshots import SnapshotStore
from gateway.exceptions import InvalidDatasetChange
from gateway.settings import DEFAULT_PSEUDONYM_KEYS, DEFAULT_SIGNING_KEY, Settings
from policies import catalog_changes
from policies.exceptions import PolicyConflict, UnknownObject
from policies.management import REGISTER, Change


@dataclass(frozen=True, slots=True)
class SourceGuard:
    """What a dataset added while running may read. An administrator of the register is trusted with the
    catalog, not with the host: an entry may not turn the gateway into a reader of its own state database,
    keys or snapshots, of files outside the dataset roots, or of a private dataset as a public table
    (which is read whole, without noise)."""

    roots: tuple[Path, ...]
    forbidden: tuple[Path, ...]
    url_envs: frozenset[str]

    def readable(self, path: Path) -> None:
        if not any(path.is_relative_to(root) for root in self.roots):
            raise InvalidDatasetChange("a file the entry names is outside the dataset roots (DATAPOORT_DATASET_ROOTS)")
        if any(path == place or path.is_relative_to(place) for place in self.forbidden):
            raise InvalidDatasetChange("a file the entry names is the gateway's own (state, keys or snapshots)")
        if not path.is_file():
            raise InvalidDatasetChange("a file the entry names is not a regular file")

    def check(self, name: str, spec: DatasetSpec, catalog: Catalog) -> None:
        source = spec.source
        if source.kind == "postgresql" and (source.url_env or "") not in self.url_envs:
            raise InvalidDatasetChange(
                f"dataset {name!r}: url_env {source.url_env!r} is not one the operator allows "
                "(DATAPOORT_DATASET_URL_ENVS)"
            )

        def place(dataset: DatasetSpec) -> tuple[str, str | None, str | None, str | None]:
            return (dataset.source.kind, dataset.source.path, dataset.source.table, dataset.source.url_env)

        for other, dataset in catalog.datasets.items():
            if other != name and dataset.public != spec.public and place(dataset) == place(spec):
                private = other if spec.public else name
                raise InvalidDatasetChange(f"dataset {name!r}: a public table may not read private dataset {private!r}")


def guard_for(settings: Settings, file_catalog: Catalog, *, also: tuple[Path, ...] = ()) -> SourceGuard:
    """The guard of a gateway's settings; ``also``: roots of the one call (the CLI's working directory:
    the operator on the host may read its own files, never the gateway's state or keys)."""
    private = (
        settings.state_database_url.removeprefix("sqlite:///"),
        settings.snapshot_dir,
        settings.snapshot_seed_file,
        settings.data_dir / "peers",
        settings.data_dir / "duckdb-spill",
        settings.signing_key_file,
        settings.audit_signing_key_path,
        settings.pseudonym_key_path,
        settings.data_dir / DEFAULT_PSEUDONYM_KEYS,
        settings.data_dir / DEFAULT_SIGNING_KEY,
        settings.metrics_token_path,
        settings.oidc_client_secret_path,
    )
    url_envs = {dataset.source.url_env for dataset in file_catalog.datasets.values() if dataset.source.url_env}
    return SourceGuard(
        roots=tuple(Path(root).resolve() for root in (settings.catalog_path.parent, *settings.dataset_roots, *also)),
        forbidden=tuple(Path(place).resolve() for place in private if place),
        url_envs=frozenset((url_envs | set(settings.dataset_url_envs)) - {"DATAPOORT_DATABASE_URL"}),
    )


@dataclass(frozen=True, slots=True)
class CatalogContext:
    """What a change needs: the catalog file's catalog, the snapshots, what may be read, and who makes it."""

    file_catalog: Catalog
    snapshots: SnapshotStore | None
    sessions: sessionmaker[Session]
    actor: str
    instance: str
    guard: SourceGuard


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
    based_on: int
    """The version of the dataset's latest change it was prepared against."""


def prepare_change(
    session: Session,
    context: CatalogContext,
    name: str,
    entry: dict[str, Any] | None,
    *,
    expect: str,
) -> PreparedChange:
    """Validate and ingest adding (``expect="new"``), updating (``"existing"``) or removing
    (``entry=None``) dataset ``name`` against the changes recorded so far, read in ``session`` (a
    read-only snapshot will do). ``entry`` is a dataset's catalog entry with absolute paths (see
    ``catalog.resolved_entry``). Writes nothing but the ingestion's own audit event: the caller records
    the change (``record``) with its event."""
    _, entries = catalog_changes.overrides(session)
    based_on = catalog_changes.version_of(session, name)
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
    if after is not None:
        context.guard.check(name, after, after_catalog)
    if after is not None and name in snapshot_datasets(after_catalog):
        _ingest(context, after_catalog, name)
    what = "dataset.remove" if entry is None else ("dataset.add" if before is None else "dataset.update")
    change = Change(what, f"dataset:{name}", describe(before), describe(after), REGISTER)
    return PreparedChange(change, name, changed[name], based_on)


def record(session: Session, prepared: PreparedChange, *, actor: str, now: datetime) -> None:
    catalog_changes.record(session, prepared.dataset, prepared.entry, based_on=prepared.based_on, actor=actor, now=now)


def _ingest(context: CatalogContext, catalog: Catalog, name: str) -> None:
    if context.snapshots is None:
        return
    (outcome,) = ingest_catalog(
        context.snapshots, catalog, context.sessions, actor=context.actor, instance=context.instance, names=[name]
    )
    if outcome.error is not None:
        raise InvalidDatasetChange(f"dataset {name!r} could not be ingested: {outcome.error}")
