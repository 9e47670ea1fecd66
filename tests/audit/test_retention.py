"""Retention: pruning old events leaves a signed anchor, the rest still verifies with the public key, and
nobody can cut the log's beginning with an anchor of their own."""

from __future__ import annotations

from datetime import timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from audit import checkpoints, retention
from audit.models import AuditAnchor, AuditEvent
from audit.service import verify_log
from gateway.store.database import session_factory
from tests.audit.test_checkpoints import START, _append, _keys


def _prune(sessions: sessionmaker[Session], signer: Ed25519PrivateKey, seconds: int) -> retention.Pruned:
    with sessions() as session:
        pruned = retention.prune(
            session, signer, before=START + timedelta(seconds=seconds), now=START + timedelta(days=1)
        )
        session.commit()
        return pruned


def test_pruning_keeps_the_rest_verifiable(state_engine: Engine) -> None:
    signer = Ed25519PrivateKey.generate()
    sessions = session_factory(state_engine, checkpoints.CheckpointPolicy(signer, every_events=10))
    _append(sessions, 30)
    pruned = _prune(sessions, signer, 14)  # events 1..14 happened before START + 14 s
    assert (pruned.events_removed, pruned.anchor_sequence) == (14, 14)
    _append(sessions, 5, first=30)  # the log goes on after pruning
    with sessions() as session:
        assert session.scalar(select(func.min(AuditEvent.sequence))) == 15
        result = verify_log(session, _keys(signer))  # type: ignore[arg-type]
    assert result.ok, result.report()
    assert result.chain.events_checked == 21


def test_a_forged_anchor_is_caught(state_engine: Engine) -> None:
    """Someone deletes the first events and writes an anchor signed with a key of their own."""
    signer, forger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    sessions = session_factory(state_engine, checkpoints.CheckpointPolicy(signer, every_events=10))
    _append(sessions, 30)
    _prune(sessions, forger, 10)
    with sessions() as session:
        result = verify_log(session, _keys(signer))  # type: ignore[arg-type]
        assert result.chain.ok  # the chain alone cannot tell
        assert not result.ok
        assert result.first_broken_sequence == 11
        assert "unknown key" in (result.problem or "")
        anchor = session.get(AuditAnchor, 10)
        assert anchor is not None
        anchor.key_id = checkpoints.key_id(signer.public_key())  # pretend the real key signed it
        session.commit()
        assert "not validly signed" in (verify_log(session, _keys(signer)).problem or "")  # type: ignore[arg-type]


def test_nothing_old_enough_prunes_nothing(state_engine: Engine) -> None:
    signer = Ed25519PrivateKey.generate()
    sessions = session_factory(state_engine)
    _append(sessions, 3)
    assert _prune(sessions, signer, -10) == retention.Pruned(0, None)


def test_checkpoints_after_pruning_still_link_up(state_engine: Engine) -> None:
    signer = Ed25519PrivateKey.generate()
    sessions = session_factory(state_engine, checkpoints.CheckpointPolicy(signer, every_events=10))
    _append(sessions, 30)
    _prune(sessions, signer, 14)  # removes checkpoints 1 and 11; 21's predecessor is gone with them
    with sessions() as session:
        result = verify_log(session, _keys(signer), max_gap=10)  # type: ignore[arg-type]
    assert result.ok, result.report()
