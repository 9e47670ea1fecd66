"""Canonical serialisation of audit events and the hash chain over them.

Canonical form, versions 1 to 3 (stable: a change requires a new version tag, never an edit):

* a JSON object holding the version's fields (``HASHED_FIELDS_V1``; version 2 adds ``parent_span_id`` and
  ``processing_activity_id``, version 3 ``completed_at``, ``data_subject_id`` and ``data_subject_type``),
  plus ``"v": <version>``; each event stores the version it was written in;
* keys sorted, no insignificant whitespace (separators ``,`` and ``:``), UTF-8, non-ASCII kept as is;
* timestamps as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC; floats in Python's shortest round-trip form;
  absent values as ``null``.

``hash = SHA-256(canonical bytes)`` in lower-case hex. Because ``prev_hash`` is one of the fields, each
hash covers the whole history before it: changing, removing, inserting or reordering any event changes
every later hash. The first event's ``prev_hash`` is ``GENESIS_HASH``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

CANONICAL_VERSION = 3
"""The form new events are written in; every event stores its own (``canonical_version``)."""
GENESIS_HASH = "0" * 64

# The fields that enter the hash, per version (order does not matter: keys are sorted).
HASHED_FIELDS_V1: tuple[str, ...] = (
    "sequence",
    "occurred_at",
    "request_id",
    "traceparent",
    "principal_id",
    "organisation",
    "roles",
    "action",
    "dataset",
    "purpose",
    "legal_basis",
    "query",
    "decision",
    "reason",
    "detail",
    "privacy_cost",
    "rows_released",
    "response_digest",
    "client_address",
    "instance",
    "prev_hash",
)
HASHED_FIELDS_V2: tuple[str, ...] = (*HASHED_FIELDS_V1, "parent_span_id", "processing_activity_id")
"""Version 2 adds the caller's span (W3C ``traceparent``) and the purpose's entry in the register of
processing activities, as the Logboek Dataverwerkingen names them."""
HASHED_FIELDS: tuple[str, ...] = (*HASHED_FIELDS_V2, "completed_at", "data_subject_id", "data_subject_type")
"""Version 3 adds when the operation ended (Logboek ``end_time``) and the person an operation concerns
(Logboek ``data_subject_id``/``_type``): a pseudonym, never a BSN, for a re-identification or an inzage."""
FIELDS_BY_VERSION: dict[int, tuple[str, ...]] = {1: HASHED_FIELDS_V1, 2: HASHED_FIELDS_V2, 3: HASHED_FIELDS}


def format_timestamp(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("audit timestamps must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _version(fields: Mapping[str, Any]) -> int:
    version = fields.get("canonical_version") or 1
    if version not in FIELDS_BY_VERSION:
        raise ValueError(f"unknown canonical version {version!r}")
    return int(version)


def canonical_bytes(fields: Mapping[str, Any]) -> bytes:
    """Serialise the hashed fields of one event in its canonical form (``canonical_version``, 1 if absent)."""
    version = _version(fields)
    document: dict[str, Any] = {"v": version}
    for name in FIELDS_BY_VERSION[version]:
        value = fields[name]
        if isinstance(value, datetime):
            value = format_timestamp(value)
        document[name] = value
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def event_hash(fields: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_bytes(fields)).hexdigest()
