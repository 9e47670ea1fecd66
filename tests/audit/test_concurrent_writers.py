"""Several gateway processes on one state database still write one linear chain: two processes append
5,000 events each, at the same time, and the result is 10,000 events that verify."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from audit.models import AuditEvent
from audit.verification import verify_chain

WRITER = textwrap.dedent(
    """
    import sys
    from gateway.store.database import create_state_engine, session_factory
    from audit.service import EventDraft, append_event

    url, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    engine = create_state_engine(url)
    sessions = session_factory(engine)
    for index in range(count):
        with sessions() as session:
            append_event(session, EventDraft(request_id=f"{name}-{index}", action="aggregate", decision="allow"))
            session.commit()
    engine.dispose()
    """
)


def test_two_processes_writing_at_once_leave_one_linear_chain(state_engine: Engine) -> None:
    url = state_engine.url.render_as_string(hide_password=False)
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, url, name, "5000"], stderr=subprocess.PIPE)
        for name in ("a", "b")
    ]
    for writer in writers:
        _, errors = writer.communicate(timeout=300)
        assert writer.returncode == 0, errors.decode()[-2000:]
    with Session(state_engine) as session:
        assert session.scalar(select(func.count()).select_from(AuditEvent)) == 10_000
        # Both writers really interleaved (not one after the other): each has events among the other's.
        names = [
            request.split("-")[0]
            for request in session.scalars(select(AuditEvent.request_id).order_by(AuditEvent.sequence))
        ]
        assert sum(1 for left, right in itertools.pairwise(names) if left != right) > 10
        result = verify_chain(session)
    assert result.ok, result
    assert (result.events_checked, result.head_sequence) == (10_000, 10_000)
