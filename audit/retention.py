"""Retention: removing events older than the retention period while the rest still verifies.

Pruning deletes every event up to a sequence S (the last one older than the cut-off), and the checkpoints
over them, and stores a signed *anchor* (S, hash of event S): the chain now starts there, since event S+1
names that hash as its ``prev_hash``. The anchor is signed like a checkpoint, so a verifier with the public
keys can tell an honest pruning from someone deleting the log's beginning. The pruning itself is recorded
as an audit event, in the same transaction.

Anchor message, version 1::

    b"datapoort-audit-anchor-v1\\n" + canonical JSON of {"hash", "pruned_at", "sequence"}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from audit import checkpoints
from audit.chain import format_timestamp
from audit.models import AuditAnchor, AuditCheckpoint, AuditEvent

ANCHOR_PREFIX = b"datapoort-audit-anchor-v1\n"


def anchor_message(sequence: int, event_hash: str, pruned_at: datetime) -> bytes:
    document = {"hash": event_hash, "pruned_at": format_timestamp(pruned_at), "sequence": sequence}
    return ANCHOR_PREFIX + json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def latest_anchor(session: Session) -> AuditAnchor | None:
    return session.scalars(select(AuditAnchor).order_by(AuditAnchor.sequence.desc()).limit(1)).first()


@dataclass(frozen=True, slots=True)
class Pruned:
    events_removed: int
    anchor_sequence: int | None


def prune(session: Session, signer: Ed25519PrivateKey, *, before: datetime, now: datetime) -> Pruned:
    """Remove every event that happened before ``before`` (and the checkpoints over them) and anchor the
    chain at the last one removed, signed with ``signer``. In the caller's transaction; the caller
    records the pruning as an event in the same one."""
    last = session.scalars(
        select(AuditEvent).where(AuditEvent.occurred_at < before).order_by(AuditEvent.sequence.desc()).limit(1)
    ).first()
    if last is None:
        return Pruned(0, None)
    sequence, event_hash = last.sequence, last.hash
    removed = session.execute(delete(AuditEvent).where(AuditEvent.sequence <= sequence)).rowcount  # type: ignore[attr-defined]
    session.execute(delete(AuditCheckpoint).where(AuditCheckpoint.sequence <= sequence))
    signature = signer.sign(anchor_message(sequence, event_hash, now))
    session.add(
        AuditAnchor(
            sequence=sequence,
            hash=event_hash,
            pruned_at=now,
            key_id=checkpoints.key_id(signer.public_key()),
            signature=signature.hex(),
        )
    )
    session.flush()
    return Pruned(int(removed or 0), sequence)


def verify_anchors(session: Session, public_keys: Mapping[str, Ed25519PublicKey]) -> str | None:
    """``None`` if every anchor is signed by a known key, else what is wrong with the first that is not."""
    for anchor in session.scalars(select(AuditAnchor).order_by(AuditAnchor.sequence)):
        key = public_keys.get(anchor.key_id)
        if key is None:
            return f"the anchor at {anchor.sequence} is signed by an unknown key {anchor.key_id}"
        try:
            key.verify(bytes.fromhex(anchor.signature), anchor_message(anchor.sequence, anchor.hash, anchor.pruned_at))
        except (InvalidSignature, ValueError):
            return f"the anchor at {anchor.sequence} is not validly signed: the log's beginning may have been cut"
    return None
