"""Appending to and verifying the hash-chained audit log.

Appends run inside the caller's transaction, so an event and whatever it describes (a budget spend, a
released answer) commit together or not at all. The service never commits.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import insert, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from audit import checkpoints, retention
from audit.chain import CANONICAL_VERSION, GENESIS_HASH, event_hash
from audit.exceptions import AuditUnavailable
from audit.models import AuditEvent
from audit.verification import ChainVerification, verify_chain

logger = logging.getLogger("datapoort.audit")

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
    data_subject_id: str | None = None
    data_subject_type: str | None = None
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    completed_at: datetime | None = None
    """Set when the event is appended, if the caller has not: the outcome is known by then."""


def _lock_chain(session: Session) -> None:
    """Serialise appends. PostgreSQL: a transaction-scoped advisory lock. SQLite: the gateway's engine
    opens every transaction with ``BEGIN IMMEDIATE``, which already holds the database write lock. In
    both cases the primary key on ``sequence`` is the backstop: two appends on the same head cannot
    both commit."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _POSTGRES_CHAIN_LOCK})


_DRAFT_FIELDS = tuple(item.name for item in dataclass_fields(EventDraft))
_NEWEST = AuditEvent.sequence.desc()
_HEAD = select(
    select(AuditEvent.sequence).order_by(_NEWEST).limit(1).scalar_subquery(),
    select(AuditEvent.hash).order_by(_NEWEST).limit(1).scalar_subquery(),
)
_HEAD_AND_CHECKPOINT = _HEAD.add_columns(*checkpoints.latest_columns())
# Core, not the ORM: its unit of work costs more than the round trip.
_INSERT = insert(AuditEvent.__table__)  # type: ignore[arg-type]


def append_event(session: Session, draft: EventDraft) -> AuditEvent:
    """Add ``draft`` as the next event of the chain, in the caller's transaction.

    Three statements on PostgreSQL (the lock; the head with the latest checkpoint; the insert), two on
    SQLite, and no ORM unit of work: this runs on every request. Raises ``AuditUnavailable`` if the
    database refuses; the caller must then release nothing.
    """
    try:
        _lock_chain(session)
        policy = checkpoints.policy_of(session)
        head = session.connection().execute(_HEAD_AND_CHECKPOINT if policy else _HEAD).one()
        if head[0] is not None:
            sequence, prev_hash = head[0] + 1, head[1]
        else:  # an empty log, or one pruned to nothing: go on from the anchor
            anchor = retention.latest_anchor(session)
            sequence, prev_hash = (anchor.sequence + 1, anchor.hash) if anchor is not None else (1, GENESIS_HASH)
        fields = {name: getattr(draft, name) for name in _DRAFT_FIELDS}  # asdict() deep-copies: slower
        fields["sequence"] = sequence
        fields["completed_at"] = fields["completed_at"] or datetime.now(UTC)
        if fields["privacy_cost"] is not None:  # -0.0 would be hashed as such, but SQLite stores 0.0
            fields["privacy_cost"] = float(fields["privacy_cost"]) + 0.0
        fields["prev_hash"] = prev_hash
        fields["canonical_version"] = CANONICAL_VERSION
        fields["hash"] = event_hash(fields)
        session.connection().execute(_INSERT, fields)
        event = AuditEvent(**fields)  # for the caller; the row is already written
        if policy is not None:
            checkpoints.checkpoint_if_due(session, policy, event, head[2], head[3])
    except SQLAlchemyError as exc:
        logger.error("the audit event could not be written: %s", type(exc).__name__)
        raise AuditUnavailable("the audit event could not be written") from exc
    return event


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
    workers: int = 1,
) -> LogVerification:
    """Verify the hash chain, then (given the public keys) every signed checkpoint against it. Without
    keys only the chain is checked, which cannot see events removed from its end."""
    chain = verify_chain(session, workers=workers)
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
