"""The state database: engine construction and sessions.

SQLite is opened in WAL mode with every transaction started as ``BEGIN IMMEDIATE``: the write lock is
taken up front, so the read-then-write sequences of the audit chain and the budget ledger cannot
interleave between processes, and no transaction fails late on a lock upgrade.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from audit.checkpoints import SESSION_INFO_KEY, CheckpointPolicy
from audit.models import AuditBase
from policies.models import PoliciesBase

ALL_METADATA = [PoliciesBase.metadata, AuditBase.metadata]


def create_state_engine(url: str, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Take transaction control away from the sqlite3 module so "begin" below is the only BEGIN.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            # A snapshot reader (``read_snapshot``) takes no write lock: in WAL mode a deferred
            # transaction reads one consistent snapshot while writers go on.
            snapshot = connection.get_execution_options().get(SNAPSHOT_OPTION)
            connection.exec_driver_sql("BEGIN DEFERRED" if snapshot else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


SNAPSHOT_OPTION = "datapoort_snapshot"


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
