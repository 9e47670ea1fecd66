"""Signed checkpoints: with only the public key, every kind of tampering is found, including what the
chain alone cannot see (events cut from the end, a chain rewritten with fresh hashes), and old checkpoints
stay verifiable after the signing key is rotated."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from audit import checkpoints
from audit.chain import HASHED_FIELDS, event_hash
from audit.models import AuditCheckpoint, AuditEvent
from audit.service import EventDraft, append_event, verify_log
from gateway.store.database import session_factory

START = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _append(sessions: sessionmaker[Session], count: int, first: int = 0) -> None:
    with sessions() as session:
        for index in range(first, first + count):
            draft = EventDraft(
                request_id=f"r{index}",
                action="aggregate",
                decision="allow",
                purpose="beleid",
                occurred_at=START + timedelta(seconds=index),
            )
            append_event(session, draft)
        session.commit()


@pytest.fixture
def signer() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def signed(state_engine: Engine, signer: Ed25519PrivateKey) -> sessionmaker[Session]:
    """35 events, checkpoints every 10 (at 1, 11, 21 and 31)."""
    sessions = session_factory(state_engine, checkpoints.CheckpointPolicy(signer, every_events=10))
    _append(sessions, 35)
    return sessions


def _keys(*signers: Ed25519PrivateKey) -> dict[str, object]:
    return {checkpoints.key_id(s.public_key()): s.public_key() for s in signers}


def _verify(sessions: sessionmaker[Session], *signers: Ed25519PrivateKey):  # type: ignore[no-untyped-def]
    with sessions() as session:
        return verify_log(session, _keys(*signers))  # type: ignore[arg-type]


def _sql(sessions: sessionmaker[Session], *statements: str) -> None:
    with sessions() as session:
        for statement in statements:
            session.execute(text(statement))
        session.commit()


def test_an_untouched_log_verifies_with_the_public_key_alone(
    signed: sessionmaker[Session], signer: Ed25519PrivateKey
) -> None:
    result = _verify(signed, signer)
    assert result.ok, result.report()
    assert result.checkpoints is not None
    assert (result.checkpoints.checkpoints_checked, result.checkpoints.latest_sequence) == (4, 31)
    with signed() as session:
        assert list(session.scalars(select(AuditCheckpoint.sequence))) == [1, 11, 21, 31]


def test_a_checkpoint_is_also_due_after_enough_time(state_engine: Engine, signer: Ed25519PrivateKey) -> None:
    sessions = session_factory(state_engine, checkpoints.CheckpointPolicy(signer, every_events=1000, every_seconds=5))
    _append(sessions, 12)  # one second apart
    with sessions() as session:
        assert list(session.scalars(select(AuditCheckpoint.sequence))) == [1, 6, 11]


@pytest.mark.parametrize(
    ("statements", "broken"),
    [
        (["UPDATE audit_event SET purpose = 'marketing' WHERE sequence = 5"], 5),  # a changed field
        (["DELETE FROM audit_event WHERE sequence = 7"], 7),  # a deleted event
        (  # an inserted event: everything from 10 on moved up by one, a copy of 9 put in at 10
            [
                "UPDATE audit_event SET sequence = sequence + 1000 WHERE sequence >= 10",
                "UPDATE audit_event SET sequence = sequence - 999 WHERE sequence >= 1010",
                "INSERT INTO audit_event (sequence, occurred_at, request_id, action, decision, canonical_version,"
                " prev_hash, hash) SELECT 10, occurred_at, 'inserted', action, decision, canonical_version,"
                " prev_hash, substr(hash, 2) || 'x'"
                " FROM audit_event WHERE sequence = 9",
            ],
            10,
        ),
        (  # two events swapped
            [
                "UPDATE audit_event SET sequence = 1000 WHERE sequence = 12",
                "UPDATE audit_event SET sequence = 12 WHERE sequence = 13",
                "UPDATE audit_event SET sequence = 13 WHERE sequence = 1000",
            ],
            12,
        ),
        (["DELETE FROM audit_event WHERE sequence >= 25"], 25),  # cut from the end, before checkpoint 31
    ],
)
def test_every_kind_of_tampering_reports_the_first_broken_sequence(
    signed: sessionmaker[Session], signer: Ed25519PrivateKey, statements: list[str], broken: int
) -> None:
    _sql(signed, *statements)
    result = _verify(signed, signer)
    assert not result.ok
    assert result.first_broken_sequence == broken, result.report()


def test_a_chain_rewritten_with_fresh_hashes_is_caught_by_its_checkpoints(
    signed: sessionmaker[Session], signer: Ed25519PrivateKey
) -> None:
    """Someone with write access changes event 15 and recomputes every later hash: the chain verifies,
    the checkpoint at 21 does not."""
    with signed() as session:
        events = list(
            session.scalars(select(AuditEvent).where(AuditEvent.sequence >= 14).order_by(AuditEvent.sequence))
        )
        previous = events[0].hash
        for event in events[1:]:
            if event.sequence == 15:
                event.purpose = "marketing"
            event.prev_hash = previous
            event.hash = event_hash({name: getattr(event, name) for name in (*HASHED_FIELDS, "canonical_version")})
            previous = event.hash
        session.commit()
    result = _verify(signed, signer)
    assert result.chain.ok
    assert not result.ok
    assert result.first_broken_sequence == 12  # after the last checkpoint that still holds (11)
    assert "rewritten" in (result.problem or "")


def test_a_forged_or_unknown_checkpoint_is_refused(signed: sessionmaker[Session], signer: Ed25519PrivateKey) -> None:
    _sql(signed, "UPDATE audit_checkpoint SET signed_at = signed_at WHERE sequence = 11")
    with signed() as session:
        checkpoint = session.get(AuditCheckpoint, 21)
        assert checkpoint is not None
        checkpoint.signature = Ed25519PrivateKey.generate().sign(b"something else").hex()
        session.commit()
    result = _verify(signed, signer)
    assert (result.ok, result.first_broken_sequence) == (False, 21)
    assert "signature" in (result.problem or "")
    other = _verify(signed, Ed25519PrivateKey.generate())
    assert not other.ok
    assert "no public key" in (other.problem or "")


def test_after_key_rotation_old_checkpoints_verify_with_the_old_public_key(
    state_engine: Engine, signer: Ed25519PrivateKey
) -> None:
    _append(session_factory(state_engine, checkpoints.CheckpointPolicy(signer, every_events=10)), 15)
    successor = Ed25519PrivateKey.generate()
    _append(session_factory(state_engine, checkpoints.CheckpointPolicy(successor, every_events=10)), 15, first=15)
    sessions = session_factory(state_engine)
    assert _verify(sessions, signer, successor).ok
    assert not _verify(sessions, successor).ok  # the old checkpoints need the old public key


def test_key_files_are_written_private_and_never_overwritten(tmp_path: Path) -> None:
    import stat

    kid = checkpoints.generate_key_pair(tmp_path / "k.pem", tmp_path / "k.pub.pem")
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600
    assert list(checkpoints.load_public_keys([tmp_path / "k.pub.pem"])) == [kid]
    assert checkpoints.key_id(checkpoints.load_private_key(tmp_path / "k.pem").public_key()) == kid
    with pytest.raises(FileExistsError):
        checkpoints.generate_key_pair(tmp_path / "k.pem", tmp_path / "other.pub.pem")


@pytest.mark.parametrize(
    ("statements", "broken", "problem"),
    [
        # Found in review: deleting checkpoints used to hide a rewritten chain.
        (["DELETE FROM audit_checkpoint WHERE sequence = 11"], 2, "missing"),
        (["DELETE FROM audit_checkpoint"], 1, "no signed checkpoint"),
        (["DELETE FROM audit_checkpoint WHERE sequence > 1"], 2, "events after the last checkpoint"),
    ],
)
def test_deleted_checkpoints_are_noticed(
    signed: sessionmaker[Session], signer: Ed25519PrivateKey, statements: list[str], broken: int, problem: str
) -> None:
    _sql(signed, *statements)
    with signed() as session:
        result = verify_log(session, _keys(signer), max_gap=10)  # type: ignore[arg-type]
    assert not result.ok
    assert result.first_broken_sequence == broken, result.report()
    assert problem in (result.problem or "")


def test_the_latest_checkpoint_cut_with_the_log_needs_a_sequence_known_from_outside(
    signed: sessionmaker[Session], signer: Ed25519PrivateKey
) -> None:
    """Cutting the log back together with its latest checkpoint is invisible from inside the database;
    a sequence noted elsewhere (e.g. by the privacy officer) catches it."""
    _sql(signed, "DELETE FROM audit_event WHERE sequence > 28", "DELETE FROM audit_checkpoint WHERE sequence = 31")
    with signed() as session:
        assert verify_log(session, _keys(signer), max_gap=10).ok  # type: ignore[arg-type]
        result = verify_log(session, _keys(signer), max_gap=10, min_sequence=31)  # type: ignore[arg-type]
    assert not result.ok
    assert result.first_broken_sequence == 29


def test_an_event_downgraded_to_version_1_is_caught(signed: sessionmaker[Session], signer: Ed25519PrivateKey) -> None:
    """Version 1 hashes fewer fields: an event turned into version 1 could carry forged, unhashed fields."""
    with signed() as session:
        event = session.get(AuditEvent, 20)
        assert event is not None
        event.canonical_version = 1
        event.processing_activity_id = "https://forged.example"
        fields = {name: getattr(event, name) for name in (*HASHED_FIELDS, "canonical_version")}
        event.hash = event_hash(fields)
        session.commit()
    result = _verify(signed, signer)
    assert not result.ok
    assert result.first_broken_sequence == 20
