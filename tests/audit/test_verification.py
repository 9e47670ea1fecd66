"""The fast verifier: the database's rendering of the canonical form equals the reference, breaks are
found across the ranges that worker processes verify, and a rendering difference is never a false alarm."""

from __future__ import annotations

import dataclasses
import hashlib
import string
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from audit.chain import HASHED_FIELDS, canonical_bytes
from audit.models import AuditEvent
from audit.service import EventDraft, append_event
from audit.verification import _COST_MARK, _rendering, verify_chain
from gateway.store.database import create_state_engine, session_factory
from gateway.store.migrate import upgrade

_FROM, _UNTIL = datetime(2000, 1, 1), datetime(2100, 1, 1)  # noqa: DTZ001 - hypothesis bounds are naive
_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)


def _append(sessions: sessionmaker[Session], count: int, **fields: object) -> None:
    with sessions() as session:
        for index in range(count):
            draft = EventDraft(request_id=f"r{index}", action="aggregate", decision="allow", privacy_cost=0.5)
            for name, value in fields.items():
                setattr(draft, name, value)
            append_event(session, draft)
        session.commit()


def _rendered(session: Session, sequence: int) -> str:
    rendering = _rendering(session.get_bind().dialect.name)
    rendered, cost = session.execute(
        select(rendering, AuditEvent.privacy_cost).where(AuditEvent.sequence == sequence)
    ).one()
    return str(rendered).replace(_COST_MARK, f'"privacy_cost":{"null" if cost is None else repr(cost)},', 1)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    words=st.lists(_TEXT, min_size=4, max_size=4),
    cost=st.none() | st.floats(min_value=0, max_value=1e6, allow_nan=False),
    rows=st.none() | st.integers(min_value=0, max_value=2**31 - 1),
    span=st.none() | st.text(alphabet=string.hexdigits, min_size=16, max_size=16),
    ended=st.none() | st.datetimes(min_value=_FROM, max_value=_UNTIL, timezones=st.just(UTC)),
)
def test_the_database_renders_the_reference_form(
    sessions: sessionmaker[Session],
    words: list[str],
    cost: float | None,
    rows: int | None,
    span: str | None,
    ended: datetime | None,
) -> None:
    """Quotes, backslashes, control characters and any Unicode, on SQLite and PostgreSQL: byte for byte
    what ``canonical_bytes`` makes, so no event needs the slow path."""
    _append(
        sessions,
        1,
        query=words[0],
        detail=words[1],
        reason=words[2][:128],
        legal_basis=words[3],
        privacy_cost=cost,
        rows_released=rows,
        parent_span_id=span,
        completed_at=ended,
        data_subject_id=words[0][:128] or None,
    )
    with sessions() as session:
        event = session.scalars(select(AuditEvent).order_by(AuditEvent.sequence.desc()).limit(1)).one()
        fields = {name: getattr(event, name) for name in (*HASHED_FIELDS, "canonical_version")}
        assert _rendered(session, event.sequence).encode() == canonical_bytes(fields)


@pytest.mark.parametrize("version", [1, 2])
def test_older_events_render_in_their_own_form(sessions: sessionmaker[Session], version: int) -> None:
    from audit.chain import event_hash

    _append(sessions, 2)
    with sessions() as session:
        session.execute(text("UPDATE audit_event SET canonical_version = :v"), {"v": version})
        for event in session.scalars(select(AuditEvent)):
            fields = {name: getattr(event, name) for name in (*HASHED_FIELDS, "canonical_version")}
            assert _rendered(session, event.sequence).encode() == canonical_bytes(fields)
            event.hash = event_hash(fields)  # a chain written before version 2 existed
        session.commit()
    with sessions() as session:
        assert not verify_chain(session).ok  # the links still name the old hashes


def test_a_rendering_difference_falls_back_to_the_reference(tmp_path: Path) -> None:
    """A timestamp stored without its zero fraction (as another writer might on SQLite; PostgreSQL
    stores values, not text) renders differently in SQL but means the same instant: confirmed by the
    reference, not reported."""
    engine = create_state_engine(f"sqlite:///{tmp_path / 'state.db'}")
    upgrade(engine)
    sessions = session_factory(engine)
    _append(sessions, 3, occurred_at=datetime(2026, 11, 30, 10, 0, 0, tzinfo=UTC))
    with sessions() as session:
        session.execute(text("UPDATE audit_event SET occurred_at = '2026-11-30 10:00:00' WHERE sequence = 2"))
        event = session.get(AuditEvent, 2)
        assert event is not None
        fields = {name: getattr(event, name) for name in (*HASHED_FIELDS, "canonical_version")}
        assert _rendered(session, 2).encode() != canonical_bytes(fields)
        assert verify_chain(session).ok
        session.execute(text("UPDATE audit_event SET occurred_at = '2026-11-30 10:00:01' WHERE sequence = 2"))
        result = verify_chain(session)
        assert (result.ok, result.first_broken_sequence) == (False, 2)
    engine.dispose()


@pytest.mark.parametrize(
    ("tamper", "broken_at"),
    [
        (None, None),
        ("UPDATE audit_event SET principal_id = 'someone-else' WHERE sequence = 31", 31),  # first of a range
        ("UPDATE audit_event SET decision = 'deny' WHERE sequence = 30", 30),  # last of a range
        ("DELETE FROM audit_event WHERE sequence = 30", 30),  # the event a later range starts from
        ("DELETE FROM audit_event WHERE sequence IN (59, 60)", 59),  # a range's end
        ("DELETE FROM audit_event WHERE sequence = 90", None),  # the head: only a checkpoint can tell
        ("UPDATE audit_event SET privacy_cost = 'Infinity' WHERE sequence = 45", 45),
        ("UPDATE audit_event SET canonical_version = 7 WHERE sequence = 70", 70),
        ("UPDATE audit_event SET sequence = 0 WHERE sequence = 1", 1),
    ],
)
def test_worker_processes_find_the_first_break(
    sessions: sessionmaker[Session], tamper: str | None, broken_at: int | None
) -> None:
    _append(sessions, 90, principal_id="p")
    if tamper is not None:
        with sessions() as session:
            session.execute(text(tamper))
            session.commit()
    with sessions() as session:
        alone = verify_chain(session)
        apart = verify_chain(session, workers=3, parallel_from=10)
    assert dataclasses.replace(apart, problem=None) == dataclasses.replace(alone, problem=None)
    assert apart.first_broken_sequence == broken_at
    assert apart.ok is (broken_at is None)
    if broken_at is None:
        assert apart.events_checked == (90 if tamper is None else 89)


def test_minus_zero_is_written_as_zero_and_a_change_to_it_is_found(sessions: sessionmaker[Session]) -> None:
    """0.0 and -0.0 compare equal but the canonical form writes them differently; SQLite cannot even store
    -0.0. Appends write 0.0, so the chain verifies on both; PostgreSQL keeps a -0.0 written later, and the
    verifier, which remembers cost forms per value, must not mistake it for 0.0."""
    _append(sessions, 2, privacy_cost=-0.0)
    with sessions() as session:
        assert verify_chain(session).ok
        session.execute(text("UPDATE audit_event SET privacy_cost = :cost WHERE sequence = 2"), {"cost": -0.0})
        result = verify_chain(session)
        kept_minus_zero = session.get_bind().dialect.name == "postgresql"
    assert (result.ok, result.first_broken_sequence) == ((False, 2) if kept_minus_zero else (True, None))


def test_an_unknown_canonical_version_is_refused_even_with_a_matching_hash(sessions: sessionmaker[Session]) -> None:
    """Rendered as the newest form with ``"v": 4``, a forged event could carry a hash that matches; the
    verifier knows versions 1 to 3 only."""
    _append(sessions, 1)
    with sessions() as session:
        session.execute(text("UPDATE audit_event SET canonical_version = 4"))
        rendered = _rendered(session, 1).encode()
        session.execute(text("UPDATE audit_event SET hash = :h"), {"h": hashlib.sha256(rendered).hexdigest()})
        result = verify_chain(session)
    assert (result.ok, result.first_broken_sequence) == (False, 1)
    assert "does not know" in (result.problem or "")


def test_a_value_the_database_cannot_render_is_a_break_not_a_crash(tmp_path: Path) -> None:
    engine = create_state_engine(f"sqlite:///{tmp_path / 'state.db'}")
    upgrade(engine)
    sessions = session_factory(engine)
    _append(sessions, 3)
    with sessions() as session:
        session.execute(text("UPDATE audit_event SET detail = :blob WHERE sequence = 2"), {"blob": b"\xff\xfe"})
        session.commit()
        result = verify_chain(session)
    engine.dispose()
    assert (result.ok, result.first_broken_sequence, result.events_checked) == (False, 2, 1)
