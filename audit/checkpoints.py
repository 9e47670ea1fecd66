"""Signed checkpoints over the audit chain: what makes removing events from its end detectable.

The hash chain shows any change, insertion, removal or reordering *inside* the log, but not a log cut
short, nor one rewritten with every later hash recomputed by someone with write access to the database. A
checkpoint closes both gaps: every ``every_events`` events or ``every_seconds`` seconds (whichever comes
first, checked at each append, in the append's transaction) the gateway signs the chain head with Ed25519
and stores the signature with the signing key's id. Anyone holding only the public key can then check that
the log is intact and complete up to the latest checkpoint.

Signed message, version 1 (stable; a change needs a new version tag)::

    b"datapoort-audit-checkpoint-v1\\n" + canonical JSON of {"head_hash", "previous_sequence", "sequence", "signed_at"}

with the JSON as in ``audit.chain`` (sorted keys, no whitespace, UTC microsecond timestamp). A key id is the
first 16 hex digits of SHA-256 over the raw 32-byte public key, so rotating keys keeps old checkpoints
verifiable: the verifier is given every public key ever used and picks by id.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import ScalarSelect, select
from sqlalchemy.orm import Session

from audit.chain import format_timestamp
from audit.models import AuditCheckpoint, AuditEvent

MESSAGE_PREFIX = b"datapoort-audit-checkpoint-v1\n"
SESSION_INFO_KEY = "audit_checkpoints"
"""Where a session finds its ``CheckpointPolicy`` (``Session.info``), set by the session factory."""


def checkpoint_message(sequence: int, head_hash: str, signed_at: datetime, previous_sequence: int) -> bytes:
    document = {
        "head_hash": head_hash,
        "previous_sequence": previous_sequence,
        "sequence": sequence,
        "signed_at": format_timestamp(signed_at),
    }
    return MESSAGE_PREFIX + json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return key


def load_public_keys(paths: Iterable[Path]) -> dict[str, Ed25519PublicKey]:
    keys: dict[str, Ed25519PublicKey] = {}
    for path in paths:
        key = serialization.load_pem_public_key(path.read_bytes())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"{path} does not hold an Ed25519 public key")
        keys[key_id(key)] = key
    return keys


def generate_key_pair(private_path: Path, public_path: Path) -> str:
    """Write a new Ed25519 key pair (the private key readable by its owner only, from the first byte);
    return its key id."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    public = private.public_key()
    public_path.write_bytes(
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return key_id(public)


@dataclass(frozen=True, slots=True)
class CheckpointPolicy:
    signer: Ed25519PrivateKey
    every_events: int = 1000
    every_seconds: float = 300.0

    @property
    def key_id(self) -> str:
        return key_id(self.signer.public_key())


def policy_of(session: Session) -> CheckpointPolicy | None:
    policy = session.info.get(SESSION_INFO_KEY)
    return policy if isinstance(policy, CheckpointPolicy) else None


def latest_columns() -> list[ScalarSelect[Any]]:
    """The latest checkpoint's sequence and signing time, as scalar subqueries: the append reads them in
    the same statement as the chain head, one round trip fewer per request."""
    latest = AuditCheckpoint.sequence.desc()
    return [
        select(AuditCheckpoint.sequence).order_by(latest).limit(1).scalar_subquery(),
        select(AuditCheckpoint.signed_at).order_by(latest).limit(1).scalar_subquery(),
    ]


def checkpoint_if_due(
    session: Session,
    policy: CheckpointPolicy,
    head: AuditEvent,
    last_sequence: int | None,
    last_signed_at: datetime | None,
) -> AuditCheckpoint | None:
    """Sign the chain head if ``policy`` says one is due. Runs inside the append's transaction, under the
    chain's lock, so checkpoints are as linear as the chain."""
    due = (
        last_sequence is None
        or last_signed_at is None
        or head.sequence - last_sequence >= policy.every_events
        or (head.occurred_at - last_signed_at).total_seconds() >= policy.every_seconds
    )
    if not due:
        return None
    return sign_head(session, policy.signer, head, previous_sequence=last_sequence or 0)


def sign_head(
    session: Session, signer: Ed25519PrivateKey, head: AuditEvent, *, previous_sequence: int
) -> AuditCheckpoint:
    signed_at = head.occurred_at
    signature = signer.sign(checkpoint_message(head.sequence, head.hash, signed_at, previous_sequence))
    checkpoint = AuditCheckpoint(
        sequence=head.sequence,
        head_hash=head.hash,
        signed_at=signed_at,
        key_id=key_id(signer.public_key()),
        signature=signature.hex(),
        previous_sequence=previous_sequence,
    )
    session.add(checkpoint)
    session.flush()
    return checkpoint


@dataclass(frozen=True, slots=True)
class CheckpointVerification:
    ok: bool
    checkpoints_checked: int
    latest_sequence: int | None
    first_broken_sequence: int | None = None
    problem: str | None = None


def verify_checkpoints(
    session: Session,
    public_keys: Mapping[str, Ed25519PublicKey],
    *,
    chain_head: int | None,
    chain_start: int = 0,
    max_gap: int | None = None,
) -> CheckpointVerification:
    """Check every checkpoint's signature with the public keys alone, that each names the one before it
    (so none can be deleted unseen), and that the chain still holds the signed head at each sequence.

    Assumes the chain itself has verified from ``chain_start`` (an anchor's sequence, or 0) up to
    ``chain_head``. Then: a checkpoint beyond the head means events were removed from the end; a different
    hash at a checkpoint means the chain was rewritten with recomputed hashes after the previous good
    checkpoint; no checkpoint at all over a non-empty log means its completeness cannot be shown. With
    ``max_gap`` (the gateway's ``every_events``), no more events than that may lie between checkpoints or
    after the last one. What no check inside the database can see: the log cut back together with its
    latest checkpoints; keep the latest checkpoint's sequence outside it (``datapoort audit verify
    --min-sequence``)."""
    checked = 0
    previous = 0

    def broken(sequence: int, problem: str) -> CheckpointVerification:
        return CheckpointVerification(False, checked, previous or None, sequence, problem)

    for checkpoint in session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.sequence)):
        key = public_keys.get(checkpoint.key_id)
        if key is None:
            return broken(checkpoint.sequence, f"no public key with id {checkpoint.key_id}")
        try:
            key.verify(
                bytes.fromhex(checkpoint.signature),
                checkpoint_message(
                    checkpoint.sequence, checkpoint.head_hash, checkpoint.signed_at, checkpoint.previous_sequence
                ),
            )
        except (InvalidSignature, ValueError):
            return broken(checkpoint.sequence, "a checkpoint's signature does not verify")
        linked = checkpoint.previous_sequence == previous if checked else checkpoint.previous_sequence <= chain_start
        if not linked:
            return broken(previous + 1, f"the checkpoint before {checkpoint.sequence} is missing")
        if max_gap is not None and checked and checkpoint.sequence - previous > max_gap:
            return broken(
                previous + 1, f"more than {max_gap} events between checkpoints {previous} and {checkpoint.sequence}"
            )
        if chain_head is None or checkpoint.sequence > chain_head:
            missing = (chain_head or chain_start) + 1
            return broken(
                missing, f"events from {missing} on are missing: checkpoint {checkpoint.sequence} was signed over them"
            )
        event_hash = session.scalar(select(AuditEvent.hash).where(AuditEvent.sequence == checkpoint.sequence))
        if event_hash != checkpoint.head_hash:
            return broken(
                previous + 1,
                f"the chain was rewritten after sequence {previous}: event {checkpoint.sequence} no longer has "
                "the hash its checkpoint signed",
            )
        checked += 1
        previous = checkpoint.sequence
    if chain_head is not None and chain_head > chain_start and not checked:
        return broken(chain_start + 1, "no signed checkpoint: the log's completeness cannot be shown")
    if max_gap is not None and chain_head is not None and checked and chain_head - previous >= max_gap:
        return broken(
            previous + 1, f"{chain_head - previous} events after the last checkpoint: at least one is missing"
        )
    return CheckpointVerification(True, checked, previous or None)


def latest_checkpoint(session: Session) -> AuditCheckpoint | None:
    return session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.sequence.desc()).limit(1)).first()
