"""Canonical serialisation of audit events and the hash chain over them.

Canonical form, versions 1 and 2 (stable: a change requires a new version tag, never an edit):

* a JSON object holding the version's fields (``HASHED_FIELDS_V1``; version 2 adds ``parent_span_id`` and
  ``processing_activity_id``), plus ``"v": <version>``; each event stores the version it was written in;
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

CANONICAL_VERSION = 2
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
HASHED_FIELDS: tuple[str, ...] = (*HASHED_FIELDS_V1, "parent_span_id", "processing_activity_id")
"""Version 2 adds the caller's span (W3C ``traceparent``) and the purpose's entry in the register of
processing activities, as the Logboek Dataverwerkingen names them."""
FIELDS_BY_VERSION: dict[int, tuple[str, ...]] = {1: HASHED_FIELDS_V1, 2: HASHED_FIELDS}


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


_LAYOUT = {
    version: [(json.dumps(name) + ":", name) for name in sorted([*names, "v"])]
    for version, names in FIELDS_BY_VERSION.items()
}
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
    test): the keys are fixed per version, so their order and quoting are computed once. For verifying
    long chains."""
    version = _version(fields)
    parts = [key + (str(version) if name == "v" else _value(fields[name])) for key, name in _LAYOUT[version]]
    return ("{" + ",".join(parts) + "}").encode()
