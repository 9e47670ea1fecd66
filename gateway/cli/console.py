"""The console's sessions on the host: who is signed in, and ending sessions (a lost laptop, an officer
who left) at once, in every process."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gateway.cli.base import DataDir, app, cli_actor, load_settings, upgrade_state

console_app = typer.Typer(help="The privacy officer's web console (/console).", no_args_is_help=True)
app.add_typer(console_app, name="console")


@console_app.command("sessions")
def list_sessions(data_dir: DataDir = Path(".datapoort")) -> None:
    """The console sessions still open: who, since when, how they signed in, until when at the latest."""
    from datetime import UTC, datetime

    from sqlalchemy import select

    from gateway.store.database import create_state_engine, session_factory
    from policies.models import ConsoleSession

    settings = load_settings(data_dir)
    upgrade_state(settings)
    engine = create_state_engine(settings.state_database_url)
    now = datetime.now(UTC)
    try:
        with session_factory(engine)() as session:
            statement = select(ConsoleSession).where(
                ConsoleSession.revoked_at.is_(None), ConsoleSession.expires_at > now
            )
            rows = list(session.scalars(statement.order_by(ConsoleSession.created_at)))
    finally:
        engine.dispose()
    if not rows:
        typer.echo("no open console sessions")
    for row in rows:
        typer.echo(
            f"{row.id[:8]}  {row.principal_id} ({row.organisation})  via {row.via}"
            f"  since {row.created_at:%Y-%m-%d %H:%M}Z  last seen {row.last_seen_at:%H:%M}Z"
            f"  ends {row.expires_at:%Y-%m-%d %H:%M}Z"
        )


@console_app.command("revoke")
def revoke_sessions(
    data_dir: DataDir = Path(".datapoort"),
    principal: Annotated[str | None, typer.Option(help="End this principal's sessions.")] = None,
    everyone: Annotated[bool, typer.Option("--all", help="End every open session.")] = False,
) -> None:
    """End console sessions now (audited); the browsers holding them are sent back to sign in."""
    from datetime import UTC, datetime

    from gateway.audit_trail import AuditContext, commit_with_event
    from gateway.store.database import create_state_engine, session_factory
    from policies import console_sessions

    if (principal is None) == (not everyone):
        typer.echo("give --principal ID or --all", err=True)
        raise typer.Exit(2)
    settings = load_settings(data_dir)
    upgrade_state(settings)
    engine = create_state_engine(settings.state_database_url)
    try:
        with session_factory(engine)() as session:
            ended = console_sessions.revoke_all(session, principal, datetime.now(UTC))
            context = AuditContext.for_system(cli_actor(), action="admin", instance=settings.instance)
            context.event.query = f"console sessions revoked: {principal or 'all'}"
            commit_with_event(session, context, context.finish(decision="allow", detail=f"{ended} sessions ended"))
    finally:
        engine.dispose()
    typer.echo(f"{ended} console session(s) ended")
