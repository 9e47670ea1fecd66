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
import math
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


_SORTED = sorted([*HASHED_FIELDS, "v"])
_KEYS = [json.dumps(name) + ":" for name in _SORTED]
_encode_string = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) uses for text


def _value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return _encode_string(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("audit fields cannot hold infinite or NaN numbers")
        return float.__repr__(value)
    if isinstance(value, datetime):
        return '"' + format_timestamp(value) + '"'
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"), sort_keys=True)


def canonical_bytes_fast(fields: Mapping[str, Any]) -> bytes:
    """``canonical_bytes`` without building a dict for ``json.dumps`` (same bytes, checked by a property
    test): the keys are fixed, so their order and quoting are computed once. For verifying long chains."""
    parts = []
    for key, name in zip(_KEYS, _SORTED, strict=True):
        parts.append(key + (str(CANONICAL_VERSION) if name == "v" else _value(fields[name])))
    return ("{" + ",".join(parts) + "}").encode()
