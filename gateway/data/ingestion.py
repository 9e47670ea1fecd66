"""Ingesting the catalog's file-backed datasets into verified snapshots, each ingestion audited.

Run when the gateway starts (for files that changed, or datasets new to the catalog) and by
``datapoort datasets ingest``. What an ingestion found goes to the operator (the log, the command's
output) and the audit log, never to a querier. A file that cannot be ingested at all leaves its dataset
without a snapshot: its queries are refused with 503 before anything is spent.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass

from sqlalchemy.orm import Session, sessionmaker

from gateway.audit_trail import AuditContext, commit_with_event
from gateway.data.catalog import Catalog
from gateway.data.snapshots import IngestionReport, SnapshotStore
from gateway.exceptions import SourceUnavailable

logger = logging.getLogger("datapoort.ingestion")
ACTION = "dataset:ingest"


@dataclass(frozen=True, slots=True)
class Outcome:
    dataset: str
    report: IngestionReport | None
    """``None``: the current snapshot was already of this file and catalog entry, or it failed."""
    error: str | None = None


def snapshot_datasets(catalog: Catalog) -> list[str]:
    """The datasets that aggregate queries read through a snapshot: file-backed, with ``aggregate``."""
    return sorted(
        name
        for name, dataset in catalog.datasets.items()
        if "aggregate" in dataset.actions and dataset.source.kind in ("csv", "parquet") and not dataset.public
    )


def ingest_catalog(
    store: SnapshotStore,
    catalog: Catalog,
    sessions: sessionmaker[Session],
    *,
    actor: str,
    instance: str,
    names: list[str] | None = None,
    force: bool = False,
) -> list[Outcome]:
    """Bring each dataset's snapshot up to date (``force``: ingest even if it is), auditing every
    ingestion done or failed; a dataset whose snapshot was current is not audited (nothing happened)."""
    outcomes = []
    for name in names if names is not None else snapshot_datasets(catalog):
        dataset = catalog.datasets[name]
        try:
            report = store.ingest(name, dataset) if force else store.ensure(name, dataset)
        except SourceUnavailable as exc:
            logger.error("dataset %s could not be ingested: %s", name, exc.message)
            _audit(sessions, actor, instance, name, decision="error", reason="ingestion_failed", detail=exc.message)
            outcomes.append(Outcome(name, None, exc.message))
            continue
        except Exception as exc:  # a full disk, memory: this dataset fails, the others are still ingested
            logger.exception("dataset %s could not be ingested", name)
            message = f"the ingestion failed: {type(exc).__name__}"
            _audit(sessions, actor, instance, name, decision="error", reason="ingestion_failed", detail=message)
            outcomes.append(Outcome(name, None, message))
            continue
        if report is not None:
            detail = json.dumps(asdict(report), sort_keys=True)
            _audit(sessions, actor, instance, name, decision="allow", reason="ingested", detail=detail)
        outcomes.append(Outcome(name, report))
    return outcomes


def _audit(
    sessions: sessionmaker[Session], actor: str, instance: str, dataset: str, *, decision: str, reason: str, detail: str
) -> None:
    context = AuditContext.for_system(actor, action=ACTION, instance=instance)
    context.event.dataset = dataset
    with sessions() as session:
        commit_with_event(session, context, context.finish(decision=decision, reason=reason, detail=detail))
