"""The SQLite writer path: one writer per process, held until SQLite itself has committed or rolled back."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, event, text

from gateway.store.database import WriterBusy, create_state_engine


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = create_state_engine(f"sqlite:///{tmp_path / 'state.db'}", threads=2, write_wait_seconds=0.3)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (x INTEGER)"))
    return engine


def _other_writer(engine: Engine) -> BaseException | None:
    """Try one write transaction from another thread; what it raised, or None."""
    outcome: list[BaseException | None] = []

    def write() -> None:
        try:
            with engine.begin() as connection:
                connection.execute(text("INSERT INTO t VALUES (2)"))
            outcome.append(None)
        except Exception as exc:  # the test inspects it
            outcome.append(exc)

    thread = threading.Thread(target=write)
    thread.start()
    thread.join(timeout=10)
    return outcome[0]


@pytest.mark.parametrize("ending", ["commit", "rollback"])
def test_the_writer_is_held_until_sqlite_has_ended_the_transaction(engine: Engine, ending: str) -> None:
    """SQLAlchemy's commit and rollback events fire before SQLite's COMMIT or ROLLBACK. A writer let in
    there would find SQLite still locked and fail in its busy handler; it must wait on ours instead."""
    seen: list[BaseException | None] = []

    @event.listens_for(engine, ending)
    def probe(_connection: object) -> None:
        seen.append(_other_writer(engine))

    with engine.connect() as connection:
        transaction = connection.begin()
        connection.execute(text("INSERT INTO t VALUES (1)"))
        transaction.commit() if ending == "commit" else transaction.rollback()
    event.remove(engine, ending, probe)
    assert len(seen) == 1
    assert isinstance(seen[0], WriterBusy)
    assert _other_writer(engine) is None  # released once the transaction ended


def test_an_invalidated_connection_gives_the_writer_back(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.begin()
        connection.execute(text("INSERT INTO t VALUES (1)"))
        connection.invalidate()
    assert _other_writer(engine) is None


def test_a_connection_returned_mid_transaction_gives_the_writer_back(engine: Engine) -> None:
    connection = engine.connect()
    connection.begin()
    connection.execute(text("INSERT INTO t VALUES (1)"))
    connection.close()  # the pool's reset rolls back
    assert _other_writer(engine) is None
    with engine.connect() as check:
        assert check.execute(text("SELECT count(*) FROM t")).scalar() == 1
