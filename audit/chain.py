"""Canonical serialisation of audit events and the hash chain over them.

Canonical form, version 1 (stable: changing it requires a new version tag, never an edit):

* a JSON object holding every field of the event except ``hash``, plus ``"v": 1``;
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

CANONICAL_VERSION = 1
GENESIS_HASH = "0" * 64

# The fields that enter the hash, in the order of the table (order does not matter: keys are sorted).
HASHED_FIELDS: tuple[str, ...] = (
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


def format_timestamp(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("audit timestamps must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_bytes(fields: Mapping[str, Any]) -> bytes:
    """Serialise the hashed fields of one event in canonical form version 1."""
    document: dict[str, Any] = {"v": CANONICAL_VERSION}
    for name in HASHED_FIELDS:
        value = fields[name]
        if isinstance(value, datetime):
            value = format_timestamp(value)
        document[name] = value
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def event_hash(fields: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_bytes(fields)).hexdigest()
