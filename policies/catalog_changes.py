"""The log of catalog changes made while the gateway runs: what the catalog file is overlaid with.

Stored as opaque JSON: the gateway validates an entry against the catalog's schema before it records it
(this domain knows nothing of columns or sources), and every process rebuilds its catalog from the file
and these rows when ``latest_version`` moves.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from policies.exceptions import PolicyConflict
from policies.models import CatalogChange


def latest_version(session: Session) -> int:
    return int(session.scalar(select(func.max(CatalogChange.version))) or 0)


def version_of(session: Session, dataset: str) -> int:
    """The version of the dataset's latest change (0: never changed)."""
    return int(session.scalar(select(func.max(CatalogChange.version)).where(CatalogChange.dataset == dataset)) or 0)


def record(session: Session, dataset: str, entry: str | None, *, based_on: int, actor: str, now: datetime) -> int:
    """Add a change in the caller's transaction (committed with its audit event); its version.

    Changes are serialised (on PostgreSQL by a transaction-scoped advisory lock; SQLite has one writer),
    so versions are given in commit order and a poller that saw version N has seen every change before it.
    A change prepared against another version of the dataset than the latest is refused: two
    administrators changing one dataset at once do not silently overwrite each other."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext('datapoort.catalog_change'))"))
    if version_of(session, dataset) != based_on:
        raise PolicyConflict(f"dataset {dataset!r} was changed meanwhile; look at it again and retry")
    change = CatalogChange(dataset=dataset, entry=entry, changed_at=now, actor=actor)
    session.add(change)
    session.flush()
    return int(change.version)


def overrides(session: Session) -> tuple[int, dict[str, str | None]]:
    """The latest entry of every dataset ever changed (``None``: removed), and the version they make up
    (read in the same statement, so a change arriving meanwhile is not counted without its entry)."""
    latest = (
        select(CatalogChange.dataset, func.max(CatalogChange.version).label("version"))
        .group_by(CatalogChange.dataset)
        .subquery()
    )
    rows = session.execute(
        select(CatalogChange.dataset, CatalogChange.entry, CatalogChange.version).join(
            latest, CatalogChange.version == latest.c.version
        )
    )
    entries: dict[str, str | None] = {}
    version = 0
    for name, entry, number in rows:
        entries[str(name)] = entry
        version = max(version, int(number))
    return version, entries
