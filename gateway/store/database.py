"""The state database: engine construction and sessions.

SQLite is opened in WAL mode with every transaction started as ``BEGIN IMMEDIATE``: the write lock is
taken up front, so the read-then-write sequences of the audit chain and the budget ledger cannot
interleave between processes, and no transaction fails late on a lock upgrade. Within a process the
writers queue on one lock of their own, for at most ``write_wait_seconds`` (then the statement fails and
the request is answered 503 ``state_unavailable``): a thread never sleeps in SQLite's busy handler
while another thread of the same process holds the lock. Snapshot readers (``read_snapshot``) take
neither lock.

Pool sizes follow the request threads (``Settings.worker_threads``): a request holds at most two
connections at a time (its own, and its refusal's event), so ``2 x threads + 4`` never makes a thread
wait for a connection; a wait is bounded by ``pool_timeout`` all the same.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from audit.checkpoints import SESSION_INFO_KEY, CheckpointPolicy
from audit.models import AuditBase
from policies.models import PoliciesBase

ALL_METADATA = [PoliciesBase.metadata, AuditBase.metadata]


class WriterBusy(OperationalError):
    """No write transaction could begin within the bounded wait."""


def create_state_engine(
    url: str, *, threads: int = 16, write_wait_seconds: float = 10.0, pool_timeout: float = 10.0, **kwargs: Any
) -> Engine:
    pool = {"pool_size": 2 * threads + 4, "max_overflow": 0, "pool_timeout": pool_timeout}
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"timeout": write_wait_seconds, "check_same_thread": False},
            **(pool if ":memory:" not in url else {}),
            **kwargs,
        )
        writer = threading.Lock()
        holders: dict[int, dict[Any, Any]] = {}
        """The raw connections (by id) whose transaction holds ``writer``, with their pool record's info."""

        def _release(dbapi_connection: Any) -> None:
            info = holders.pop(id(dbapi_connection), None)
            if info is not None:
                info.pop(_HOLDS_WRITER, None)
                writer.release()

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Take transaction control away from the sqlite3 module so "begin" below is the only BEGIN.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(write_wait_seconds * 1000)}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            # A snapshot reader (``read_snapshot``) takes no write lock: in WAL mode a deferred
            # transaction reads one consistent snapshot while writers go on.
            if connection.get_execution_options().get(SNAPSHOT_OPTION):
                connection.exec_driver_sql("BEGIN DEFERRED")
                return
            raw = connection.connection.dbapi_connection
            if not writer.acquire(timeout=write_wait_seconds):
                raise WriterBusy("BEGIN IMMEDIATE", None, TimeoutError("the state database's writer is busy"))
            holders[id(raw)] = connection.connection.info
            connection.connection.info[_HOLDS_WRITER] = id(raw)
            try:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                _release(raw)
                raise

        # SQLAlchemy's "commit" and "rollback" events fire before the database's COMMIT: released there,
        # the next writer's BEGIN IMMEDIATE would meet SQLite's own lock and sleep in its busy handler.
        # The dialect's own commit and rollback release it once SQLite has let go.
        dialect = engine.dialect
        commit, rollback = dialect.do_commit, dialect.do_rollback

        def _commit_then_release(dbapi_connection: Any) -> None:
            try:
                commit(dbapi_connection)
            finally:
                _release(dbapi_connection)

        def _rollback_then_release(dbapi_connection: Any) -> None:
            try:
                rollback(dbapi_connection)
            finally:
                _release(dbapi_connection)

        setattr(dialect, "do_commit", _commit_then_release)  # noqa: B010 - this engine's dialect only
        setattr(dialect, "do_rollback", _rollback_then_release)  # noqa: B010

        @event.listens_for(engine, "checkin")
        def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
            # A connection returned (or invalidated, when no raw connection is left) mid-transaction never
            # keeps the lock.
            raw_id = record.info.pop(_HOLDS_WRITER, None)
            if raw_id is not None and holders.pop(raw_id, None) is not None:
                writer.release()

        return engine
    return create_engine(url, pool_pre_ping=True, **pool, **kwargs)


SNAPSHOT_OPTION = "datapoort_snapshot"
_HOLDS_WRITER = "datapoort_holds_writer"


def make_private(url: str) -> None:
    """An SQLite state file (and its WAL and shared-memory files, which SQLite creates with the file's
    mode) readable by its owner only: it holds keys' hashes, grants, budgets and the audit log."""
    if not url.startswith("sqlite:///") or ":memory:" in url:
        return
    path = Path(url.removeprefix("sqlite:///"))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if file.exists():
            os.chmod(file, 0o600)


def read_snapshot(session: Session) -> None:
    """Make the session's transaction (which must not have begun) one consistent, read-only snapshot:
    REPEATABLE READ on PostgreSQL, a deferred transaction on SQLite (which holds no write lock). For
    long reads, such as verifying or exporting the audit log, while the gateway keeps writing."""
    if session.in_transaction():
        raise RuntimeError("a snapshot must be taken before the transaction begins")
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "REPEATABLE READ", "postgresql_readonly": True})
    else:
        session.connection(execution_options={SNAPSHOT_OPTION: True})


def session_factory(engine: Engine, checkpoints: CheckpointPolicy | None = None) -> sessionmaker[Session]:
    """Sessions of the state database; with a ``CheckpointPolicy``, their audit appends sign checkpoints."""
    info = {SESSION_INFO_KEY: checkpoints} if checkpoints is not None else {}
    return sessionmaker(engine, expire_on_commit=False, info=info)
