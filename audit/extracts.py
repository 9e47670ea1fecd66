"""The record of every record-level extract, and looking a person up in them (inzage, AVG art. 15).

An extract is opened in the transaction of its authorising audit event, before the first byte leaves,
and closed when its stream ends (complete, or aborted by the client) with the sorted fingerprints of
the pseudonyms that actually left. Fingerprints are the first 8 bytes of each pseudonym's HMAC: a
person is found by recomputing their pseudonym under each extract's partner, dataset and key version,
never by storing who they are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, defer

from audit.models import ExtractRecord

_FINGERPRINT = np.dtype(">u8")


class FingerprintCollector:
    """The fingerprints of an extract as it streams, in one array sized for the records planned (it grows
    if more come), sorted in place at the end and handed over without a copy: 8 bytes a record. A person
    with several records is there several times, which a lookup does not mind."""

    def __init__(self, expected: int) -> None:
        self._values = np.empty(max(expected, 16), dtype=np.uint64)
        self._count = 0

    def add(self, fingerprints: np.ndarray) -> None:
        end = self._count + len(fingerprints)
        if end > len(self._values):
            self._values = np.resize(self._values, max(end, 2 * len(self._values)))
        self._values[self._count : end] = fingerprints
        self._count = end

    def packed(self) -> memoryview:
        """Sorted, as big-endian 8-byte integers (a view of this collector's own memory)."""
        values = self._values[: self._count]
        values.sort()
        if values.dtype.byteorder != ">" and np.little_endian:
            values.byteswap(inplace=True)
        return values.view(_FINGERPRINT).data.cast("B")


def _contains(packed: bytes | None, fingerprint: int) -> bool:
    if not packed:
        return False
    values = np.frombuffer(packed, dtype=_FINGERPRINT)
    position = int(np.searchsorted(values, np.uint64(fingerprint)))
    return position < len(values) and int(values[position]) == fingerprint


def open_extract(session: Session, record: ExtractRecord) -> ExtractRecord:
    session.add(record)
    session.flush()
    return record


def close_extract(
    session: Session,
    extract_id: str,
    *,
    status: str,
    completed_at: datetime,
    records_released: int,
    response_digest: str | None,
    fingerprints: bytes | memoryview,
) -> None:
    session.execute(
        update(ExtractRecord)
        .where(ExtractRecord.id == extract_id)
        .values(
            status=status,
            completed_at=completed_at,
            records_released=records_released,
            response_digest=response_digest,
            fingerprints=fingerprints,
        )
    )


@dataclass(frozen=True, slots=True)
class ExtractKey:
    """What a pseudonym in an extract was computed under."""

    organisation: str
    dataset: str
    key_version: int


def view(record: ExtractRecord) -> dict[str, Any]:
    return {
        "extract_id": record.id,
        "request_id": record.request_id,
        "principal_id": record.principal_id,
        "organisation": record.organisation,
        "dataset": record.dataset,
        "purpose": record.purpose,
        "key_version": record.key_version,
        "k_anonymity": record.k_anonymity,
        "l_diversity": record.l_diversity,
        "generalisations": record.generalisations,
        "records_released": record.records_released,
        "records_suppressed": record.records_suppressed,
        "status": record.status,
        "created_at": record.created_at.isoformat(),
        "completed_at": record.completed_at.isoformat() if record.completed_at else None,
    }


def extracts_of_person(session: Session, fingerprint_under: Callable[[ExtractKey], int | None]) -> list[ExtractRecord]:
    """Every extract whose released pseudonyms include the person whose fingerprint, under an extract's
    key, ``fingerprint_under`` computes (``None``: that key version is no longer held)."""
    found = []
    cache: dict[ExtractKey, int | None] = {}
    # A few records at a time: each holds its extract's fingerprints (8 bytes a person).
    statement = select(ExtractRecord).order_by(ExtractRecord.created_at).execution_options(yield_per=8)
    for record in session.scalars(statement):
        key = ExtractKey(record.organisation, record.dataset, record.key_version)
        if key not in cache:
            cache[key] = fingerprint_under(key)
        fingerprint = cache[key]
        if fingerprint is not None and _contains(record.fingerprints, fingerprint):
            found.append(record)
    return found


def unverifiable(session: Session, held_versions: set[int]) -> list[ExtractRecord]:
    """Extracts no lookup can answer for: without fingerprints (their stream's end was never recorded)
    or under a key version no longer held."""
    statement = (
        select(ExtractRecord)
        .options(defer(ExtractRecord.fingerprints))
        .where(or_(ExtractRecord.fingerprints.is_(None), ExtractRecord.key_version.not_in(held_versions)))
        .order_by(ExtractRecord.created_at)
    )
    return list(session.scalars(statement))


def extracts_with_pseudonym(session: Session, fingerprint: int, *, dataset: str | None = None) -> list[ExtractRecord]:
    """The extracts that released a pseudonym with this fingerprint."""
    statement = select(ExtractRecord).order_by(ExtractRecord.created_at).execution_options(yield_per=8)
    if dataset is not None:
        statement = statement.where(ExtractRecord.dataset == dataset)
    return [record for record in session.scalars(statement) if _contains(record.fingerprints, fingerprint)]
