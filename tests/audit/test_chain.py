"""The hash chain: canonical form is stable, and every kind of tampering is found."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from audit.chain import GENESIS_HASH, HASHED_FIELDS, canonical_bytes, event_hash
from audit.service import EventDraft, append_event
from audit.verification import verify_chain

FIXED = datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=UTC)


def _fields(**overrides: object) -> dict[str, object]:
    fields: dict[str, object] = dict.fromkeys(HASHED_FIELDS)
    fields.update(sequence=1, occurred_at=FIXED, request_id="r1", action="aggregate", decision="allow")
    fields["prev_hash"] = GENESIS_HASH
    fields.update(overrides)
    return fields


def test_canonical_form_is_stable() -> None:
    """A golden value: if this changes, old logs no longer verify. Bump CANONICAL_VERSION instead."""
    fields = _fields(privacy_cost=0.5, query="SELECT wijk, COUNT(*) AS count FROM residents GROUP BY wijk")
    assert canonical_bytes(fields) == (
        b'{"action":"aggregate","client_address":null,"dataset":null,"decision":"allow","detail":null,'
        b'"instance":null,"legal_basis":null,"occurred_at":"2026-11-23T12:00:00.123456Z","organisation":null,'
        b'"prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","principal_id":null,'
        b'"privacy_cost":0.5,"purpose":null,"query":"SELECT wijk, COUNT(*) AS count FROM residents GROUP BY wijk",'
        b'"reason":null,"request_id":"r1","response_digest":null,"roles":null,"rows_released":null,"sequence":1,'
        b'"traceparent":null,"v":1}'
    )
    assert event_hash(fields) == hashlib.sha256(canonical_bytes(fields)).hexdigest()
    assert event_hash(fields) == "87623faf29f4dbabde5d332633cabd420611896130531183e6899c1e98dd5c45"


def test_every_field_enters_the_hash() -> None:
    base = event_hash(_fields(canonical_version=3))
    for name in HASHED_FIELDS:
        value = 2 if name == "sequence" else ("x" if not name.endswith("_at") else datetime.now(UTC))
        changed = _fields(canonical_version=3, **{name: value})
        assert event_hash(changed) != base, name


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        canonical_bytes(_fields(occurred_at=datetime(2026, 1, 1)))  # noqa: DTZ001


def _append(sessions: sessionmaker[Session], count: int) -> None:
    with sessions() as session:
        for index in range(count):
            append_event(
                session,
                EventDraft(
                    request_id=f"r{index}", action="aggregate", decision="allow", principal_id="p", privacy_cost=0.25
                ),
            )
        session.commit()


def _execute(sessions: sessionmaker[Session], sql: str) -> None:
    with sessions() as session:
        session.execute(text(sql))
        session.commit()


def test_an_untouched_chain_verifies(sessions: sessionmaker[Session]) -> None:
    _append(sessions, 5)
    with sessions() as session:
        result = verify_chain(session)
    assert result.ok
    assert result.events_checked == 5
    assert result.head_sequence == 5


def test_an_empty_chain_verifies(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        assert verify_chain(session).ok


@pytest.mark.parametrize(
    ("tamper", "broken_at"),
    [
        ("UPDATE audit_event SET principal_id = 'someone-else' WHERE sequence = 3", 3),
        ("UPDATE audit_event SET privacy_cost = 0.01 WHERE sequence = 2", 2),
        ("DELETE FROM audit_event WHERE sequence = 3", 3),
        ("UPDATE audit_event SET sequence = 99 WHERE sequence = 2", 2),
        (f"UPDATE audit_event SET hash = '{'f' * 64}' WHERE sequence = 4", 4),
    ],
    ids=["field-edited", "cost-edited", "event-deleted", "event-moved", "hash-overwritten"],
)
def test_tampering_is_found_at_the_first_broken_event(
    sessions: sessionmaker[Session], tamper: str, broken_at: int
) -> None:
    _append(sessions, 5)
    _execute(sessions, tamper)
    with sessions() as session:
        result = verify_chain(session)
    assert not result.ok
    assert result.first_broken_sequence == broken_at


def test_a_recomputed_forgery_is_found_at_the_next_event(sessions: sessionmaker[Session]) -> None:
    """An attacker who edits an event and recomputes its hash still breaks the link to the next one."""
    _append(sessions, 4)
    with sessions() as session:
        from audit.models import AuditEvent

        event = session.get(AuditEvent, 2)
        assert event is not None
        event.principal_id = "forger"
        event.hash = event_hash({name: getattr(event, name) for name in (*HASHED_FIELDS, "canonical_version")})
        session.commit()
    with sessions() as session:
        result = verify_chain(session)
    assert not result.ok
    assert result.first_broken_sequence == 3


def test_events_link_to_their_predecessor(sessions: sessionmaker[Session]) -> None:
    _append(sessions, 3)
    with sessions() as session:
        rows = session.execute(text("SELECT sequence, prev_hash, hash FROM audit_event ORDER BY sequence")).all()
    assert rows[0].prev_hash == GENESIS_HASH
    assert rows[1].prev_hash == rows[0].hash
    assert rows[2].prev_hash == rows[1].hash


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    events=st.lists(
        st.tuples(st.text(min_size=1, max_size=20), st.floats(min_value=0, max_value=10, allow_nan=False)),
        min_size=1,
        max_size=8,
    ),
    data=st.data(),
)
def test_property_any_single_edit_is_found(events: list[tuple[str, float]], data: st.DataObject) -> None:
    """In memory: for any chain, changing any hashed field of any event breaks verification there."""
    chain: list[dict[str, object]] = []
    prev = GENESIS_HASH
    for index, (principal, cost) in enumerate(events, start=1):
        fields = _fields(sequence=index, principal_id=principal, privacy_cost=cost, prev_hash=prev)
        fields["hash"] = event_hash(fields)
        prev = str(fields["hash"])
        chain.append(fields)
    victim = data.draw(st.integers(min_value=0, max_value=len(chain) - 1))
    name = data.draw(st.sampled_from(["principal_id", "privacy_cost", "query", "decision", "dataset"]))
    original = chain[victim][name]
    replacement = data.draw(st.text(max_size=10).filter(lambda value: value != original))
    chain[victim][name] = replacement
    assert event_hash(chain[victim]) != chain[victim]["hash"]


def test_canonical_form_version_2_is_stable() -> None:
    """Version 2 adds the caller's span and the processing activity; version 1 events keep their bytes."""
    fields = _fields(canonical_version=2, parent_span_id="00f067aa0ba902b7", processing_activity_id="urn:x")
    text = canonical_bytes(fields)
    assert text.startswith(b'{"action":"aggregate",')
    assert b'"parent_span_id":"00f067aa0ba902b7"' in text
    assert b'"processing_activity_id":"urn:x"' in text
    assert text.endswith(b'"traceparent":null,"v":2}')
    assert event_hash(fields) == "074d0262065f1414cdae6a24461de6f2d3b518f67bbc14f40493d7fd85c2f140"


def test_canonical_form_version_3_is_stable() -> None:
    """Version 3 adds the end time and the data subject (a pseudonym)."""
    fields = _fields(
        canonical_version=3,
        completed_at=datetime(2026, 11, 23, 12, 0, 1, tzinfo=UTC),
        data_subject_id="pseudonym-1",
        data_subject_type="pseudonym",
    )
    text = canonical_bytes(fields)
    assert b'"completed_at":"2026-11-23T12:00:01.000000Z"' in text
    assert b'"data_subject_id":"pseudonym-1","data_subject_type":"pseudonym"' in text
    assert text.endswith(b'"traceparent":null,"v":3}')
    assert event_hash(fields) == "7a904d8610d87448eaf58916077ae733fb11d390c00742bd2cc8f4d2fcd22635"
    with pytest.raises(ValueError, match="canonical version"):
        canonical_bytes(_fields(canonical_version=4))


def test_a_chain_of_version_1_events_continued_in_the_newest_version_verifies(sessions: sessionmaker[Session]) -> None:
    """Logs written in an older version stay verifiable as they were written, and go on in the newest."""
    from audit.models import AuditEvent

    with sessions() as session:
        fields = _fields(sequence=1, request_id="old")
        fields["hash"] = event_hash(fields)
        session.add(AuditEvent(**{**fields, "canonical_version": 1}))
        session.commit()
    _append(sessions, 2)
    with sessions() as session:
        versions = list(session.scalars(text("SELECT canonical_version FROM audit_event ORDER BY sequence")))
        result = verify_chain(session)
    assert versions == [1, 3, 3]
    assert result.ok, result
