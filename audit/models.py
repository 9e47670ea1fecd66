"""The audit log table. Rows are only ever inserted; the hash chain makes any other change visible."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from audit.db_types import UTCDateTime, new_metadata


class AuditBase(DeclarativeBase):
    metadata = new_metadata()


class AuditEvent(AuditBase):
    __tablename__ = "audit_event"

    # SQLite only treats INTEGER (not BIGINT) primary keys as the rowid; both are 64-bit.
    sequence: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    traceparent: Mapped[str | None] = mapped_column(String(55))
    principal_id: Mapped[str | None] = mapped_column(String(128), index=True)
    organisation: Mapped[str | None] = mapped_column(String(128))
    roles: Mapped[str | None] = mapped_column(String(512))
    action: Mapped[str] = mapped_column(String(64))
    dataset: Mapped[str | None] = mapped_column(String(128))
    purpose: Mapped[str | None] = mapped_column(String(128))
    legal_basis: Mapped[str | None] = mapped_column(String(256))
    query: Mapped[str | None] = mapped_column(Text)
    decision: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(128))
    detail: Mapped[str | None] = mapped_column(Text)
    privacy_cost: Mapped[float | None] = mapped_column(Float)
    rows_released: Mapped[int | None] = mapped_column(Integer)
    response_digest: Mapped[str | None] = mapped_column(String(64))
    client_address: Mapped[str | None] = mapped_column(String(64))
    instance: Mapped[str | None] = mapped_column(String(128))
    parent_span_id: Mapped[str | None] = mapped_column(String(16))
    """The caller's span, from an incoming W3C ``traceparent`` (Logboek: ``parent_span_id``)."""
    processing_activity_id: Mapped[str | None] = mapped_column(String(512))
    """The purpose's entry in the register of processing activities (Logboek:
    ``dpl.core.processing_activity_id``)."""
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    """When the outcome was known and the event written (Logboek ``end_time``); ``occurred_at`` is the start."""
    data_subject_id: Mapped[str | None] = mapped_column(String(128))
    """The person the operation concerned, as a pseudonym (Logboek ``dpl.core.data_subject_id``)."""
    data_subject_type: Mapped[str | None] = mapped_column(String(64))
    canonical_version: Mapped[int] = mapped_column(Integer, server_default="1")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditCheckpoint(AuditBase):
    """An Ed25519 signature over (sequence, chain head hash, time); see ``audit.checkpoints``."""

    __tablename__ = "audit_checkpoint"

    sequence: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    head_hash: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    key_id: Mapped[str] = mapped_column(String(16))
    signature: Mapped[str] = mapped_column(String(128))
    previous_sequence: Mapped[int] = mapped_column(BigInteger, server_default="0")
    """The sequence of the checkpoint before this one (0: none), signed too, so that deleting a checkpoint
    breaks the checkpoints' own chain."""


class AuditAnchor(AuditBase):
    """Where the chain starts after events before it were pruned: the last removed event's sequence and
    hash, signed (Ed25519) so that nobody can cut the log's beginning by writing an anchor of their own."""

    __tablename__ = "audit_anchor"

    sequence: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    hash: Mapped[str] = mapped_column(String(64))
    pruned_at: Mapped[datetime] = mapped_column(UTCDateTime())
    key_id: Mapped[str] = mapped_column(String(16))
    signature: Mapped[str] = mapped_column(String(128))


class ExtractRecord(AuditBase):
    """What left in one record-level extract: who, which dataset, purpose and pseudonym key version, the
    protection applied, and the fingerprints (first 8 bytes, sorted) of every pseudonym released. No
    identifier is kept: an inzage recomputes a person's pseudonym per extract and looks it up here."""

    __tablename__ = "extract_record"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64))
    principal_id: Mapped[str] = mapped_column(String(128), index=True)
    organisation: Mapped[str] = mapped_column(String(128))
    """The partner: the pseudonyms' key is derived from it."""
    dataset: Mapped[str] = mapped_column(String(128), index=True)
    purpose: Mapped[str] = mapped_column(String(128))
    key_version: Mapped[int] = mapped_column(Integer)
    spec: Mapped[str] = mapped_column(Text)
    """The normalised extract specification (columns, filters, format), as JSON."""
    generalisations: Mapped[str] = mapped_column(Text)
    k_anonymity: Mapped[int] = mapped_column(Integer)
    l_diversity: Mapped[str | None] = mapped_column(String(160))
    records_suppressed: Mapped[int] = mapped_column(BigInteger)
    records_planned: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16))
    """``streaming`` until the stream ends, then ``complete`` or ``aborted`` (the client went away)."""
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    records_released: Mapped[int | None] = mapped_column(BigInteger)
    response_digest: Mapped[str | None] = mapped_column(String(64))
    fingerprints: Mapped[bytes | None] = mapped_column(LargeBinary)
