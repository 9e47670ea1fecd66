"""Appending to and verifying the hash-chained audit log.

Appends run inside the caller's transaction, so an event and whatever it describes (a budget spend, a
released answer) commit together or not at all. The service never commits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from audit import checkpoints, retention
from audit.chain import CANONICAL_VERSION, GENESIS_HASH, HASHED_FIELDS, canonical_bytes_fast, event_hash
from audit.exceptions import AuditUnavailable
from audit.models import AuditEvent

# Any constant works, as long as every gateway process uses the same one: it names the lock that
# serialises appends on PostgreSQL so the chain stays linear across processes.
_POSTGRES_CHAIN_LOCK = 0x6461746170_6F7274  # "dataport"


@dataclass(slots=True)
class EventDraft:
    """What the caller knows about a request; sequence, time and hashes are filled in on append."""

    request_id: str
    action: str
    decision: str
    principal_id: str | None = None
    organisation: str | None = None
    roles: str | None = None
    dataset: str | None = None
    purpose: str | None = None
    legal_basis: str | None = None
    query: str | None = None
    reason: str | None = None
    detail: str | None = None
    privacy_cost: float | None = None
    rows_released: int | None = None
    response_digest: str | None = None
    client_address: str | None = None
    instance: str | None = None
    traceparent: str | None = None
    parent_span_id: str | None = None
    processing_activity_id: str | None = None
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def _lock_chain(session: Session) -> None:
    """Serialise appends. PostgreSQL: a transaction-scoped advisory lock. SQLite: the gateway's engine
    opens every transaction with ``BEGIN IMMEDIATE``, which already holds the database write lock. In
    both cases the primary key on ``sequence`` is the backstop: two appends on the same head cannot
    both commit."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _POSTGRES_CHAIN_LOCK})


def append_event(session: Session, draft: EventDraft) -> AuditEvent:
    """Add ``draft`` as the next event of the chain, in the caller's transaction.

    Raises ``AuditUnavailable`` if the database refuses; the caller must then release nothing.
    """
    try:
        _lock_chain(session)
        head = session.execute(
            select(AuditEvent.sequence, AuditEvent.hash).order_by(AuditEvent.sequence.desc()).limit(1)
        ).first()
        if head is not None:
            sequence, prev_hash = head[0] + 1, head[1]
        else:  # an empty log, or one pruned to nothing: go on from the anchor
            anchor = retention.latest_anchor(session)
            sequence, prev_hash = (anchor.sequence + 1, anchor.hash) if anchor is not None else (1, GENESIS_HASH)
        fields = asdict(draft)
        fields["sequence"] = sequence
        fields["prev_hash"] = prev_hash
        fields["canonical_version"] = CANONICAL_VERSION
        fields["hash"] = event_hash(fields)
        event = AuditEvent(**fields)
        session.add(event)
        session.flush()
        checkpoints.maybe_checkpoint(session, event)
    except SQLAlchemyError as exc:
        raise AuditUnavailable(f"the audit event could not be written: {type(exc).__name__}") from exc
    return event


@dataclass(frozen=True, slots=True)
class ChainVerification:
    ok: bool
    events_checked: int
    head_sequence: int | None
    head_hash: str | None
    first_broken_sequence: int | None = None
    problem: str | None = None


_VERIFIED = (*HASHED_FIELDS, "canonical_version", "hash")
_VERIFIED_COLUMNS = [getattr(AuditEvent, name) for name in _VERIFIED]


def _row_hash(row: Any) -> str:
    return hashlib.sha256(canonical_bytes_fast(dict(zip(_VERIFIED, row, strict=True)))).hexdigest()


def verify_chain(session: Session, *, batch_size: int = 10_000) -> ChainVerification:
    """Walk the whole chain and recompute every hash.

    Detects an edited field, an inserted, removed or reordered event anywhere before the head.
    Removing events from the end of the log is only detectable against a signed checkpoint. Reads plain
    rows in batches (a server-side cursor on PostgreSQL), so memory stays flat however long the log.
    """
    # After retention pruning the chain starts at the latest anchor (its signature is checked by
    # ``verify_log``, which has the public keys).
    anchor = retention.latest_anchor(session)
    expected_prev = anchor.hash if anchor is not None else GENESIS_HASH
    expected_sequence = anchor.sequence + 1 if anchor is not None else 1
    checked = 0
    last: tuple[int, str] | None = None
    sequence_at, prev_at, hash_at = 0, _VERIFIED.index("prev_hash"), _VERIFIED.index("hash")
    version_at = _VERIFIED.index("canonical_version")
    span_at, activity_at = _VERIFIED.index("parent_span_id"), _VERIFIED.index("processing_activity_id")
    newest_version = 1
    statement = select(*_VERIFIED_COLUMNS).order_by(AuditEvent.sequence).execution_options(yield_per=batch_size)
    result = session.execute(statement)
    try:
        for row in result:
            sequence, stored_hash = row[sequence_at], row[hash_at]
            problem = None
            if sequence != expected_sequence:
                problem = f"sequence {expected_sequence} is missing (next present: {sequence})"
                broken = expected_sequence
            elif row[prev_at] != expected_prev:
                problem = "prev_hash does not match the previous event's hash"
                broken = sequence
            elif row[version_at] < newest_version or (
                row[version_at] == 1 and (row[span_at] is not None or row[activity_at] is not None)
            ):
                # A version 1 event hashes fewer fields: it may neither follow a newer one nor carry
                # fields its hash does not cover (a downgrade would let those be forged).
                problem = "an event in an older canonical form where it cannot be"
                broken = sequence
            elif _row_hash(row) != stored_hash:
                problem = "the stored hash does not match the event's fields"
                broken = sequence
            if problem is not None:
                return ChainVerification(
                    ok=False,
                    events_checked=checked,
                    head_sequence=last[0] if last else None,
                    head_hash=last[1] if last else None,
                    first_broken_sequence=broken,
                    problem=problem,
                )
            checked += 1
            newest_version = row[version_at]
            expected_prev = stored_hash
            expected_sequence += 1
            last = (sequence, stored_hash)
    finally:
        result.close()
    return ChainVerification(
        ok=True,
        events_checked=checked,
        head_sequence=last[0] if last else None,
        head_hash=last[1] if last else None,
    )


@dataclass(frozen=True, slots=True)
class LogVerification:
    """The chain and its checkpoints together: what ``datapoort audit verify`` reports."""

    chain: ChainVerification
    checkpoints: checkpoints.CheckpointVerification | None

    @property
    def ok(self) -> bool:
        return self.chain.ok and (self.checkpoints is None or self.checkpoints.ok)

    @property
    def first_broken_sequence(self) -> int | None:
        if not self.chain.ok:
            return self.chain.first_broken_sequence
        return self.checkpoints.first_broken_sequence if self.checkpoints is not None else None

    @property
    def problem(self) -> str | None:
        if not self.chain.ok:
            return self.chain.problem
        return self.checkpoints.problem if self.checkpoints is not None else None

    def report(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "events_checked": self.chain.events_checked,
            "head_sequence": self.chain.head_sequence,
            "head_hash": self.chain.head_hash,
            "checkpoints_checked": self.checkpoints.checkpoints_checked if self.checkpoints else None,
            "latest_checkpoint": self.checkpoints.latest_sequence if self.checkpoints else None,
            "first_broken_sequence": self.first_broken_sequence,
            "problem": self.problem,
        }


def verify_log(
    session: Session,
    public_keys: Mapping[str, Ed25519PublicKey] | None,
    *,
    max_gap: int | None = None,
    min_sequence: int | None = None,
) -> LogVerification:
    """Verify the hash chain, then (given the public keys) every signed checkpoint against it. Without
    keys only the chain is checked, which cannot see events removed from its end."""
    chain = verify_chain(session)
    if chain.ok and min_sequence is not None and (chain.head_sequence or 0) < min_sequence:
        # The latest checkpoint known from outside the database: the log was cut back to before it.
        missing = (chain.head_sequence or 0) + 1
        chain = ChainVerification(
            False, chain.events_checked, chain.head_sequence, chain.head_hash, missing,
            f"the log ends before sequence {min_sequence}, which was known to exist",
        )  # fmt: skip
    if public_keys is None or not chain.ok:
        return LogVerification(chain, None)
    forged = retention.verify_anchors(session, public_keys)
    if forged is not None:
        anchor = retention.latest_anchor(session)
        start = anchor.sequence + 1 if anchor is not None else 1
        return LogVerification(
            chain, checkpoints.CheckpointVerification(False, 0, None, first_broken_sequence=start, problem=forged)
        )
    anchor = retention.latest_anchor(session)
    return LogVerification(
        chain,
        checkpoints.verify_checkpoints(
            session,
            public_keys,
            chain_head=chain.head_sequence,
            chain_start=anchor.sequence if anchor is not None else 0,
            max_gap=max_gap,
        ),
    )
