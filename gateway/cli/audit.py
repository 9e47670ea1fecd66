"""The audit log on the host: verifying the chain, pruning by retention, creating signing keys."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from gateway.cli.base import DataDir, app, cli_actor, load_settings, parse_moment, upgrade_state
from gateway.cli.progress import progress

audit_app = typer.Typer(help="The audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(
    data_dir: DataDir = Path(".datapoort"),
    public_key: Annotated[
        list[Path] | None,
        typer.Option("--public-key", help="An Ed25519 public key (PEM) that signed checkpoints; repeatable."),
    ] = None,
    min_sequence: Annotated[
        int | None,
        typer.Option(help="A sequence known (from outside the database) to exist, e.g. the last checkpoint noted."),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Processes that verify ranges of a long chain (default: one per CPU).")
    ] = os.cpu_count() or 1,
) -> None:
    """Recompute the audit hash chain and check the signed checkpoints; exit 1 at the first broken event.

    With only public keys (given, configured, or the data dir's), this proves the log complete up to its
    latest checkpoint."""
    from audit import checkpoints
    from audit.service import verify_log
    from gateway.keys.audit_signing import verification_keys
    from gateway.store.database import create_state_engine, read_snapshot, session_factory

    settings = load_settings(data_dir)
    keys = checkpoints.load_public_keys(public_key) if public_key else verification_keys(settings)
    engine = create_state_engine(settings.state_database_url)
    try:
        # The verifier says nothing until it is done: an indeterminate bar shows it is at work.
        with session_factory(engine)() as session, progress("Verifying the audit log"):
            read_snapshot(session)
            result = verify_log(
                session,
                keys or None,
                max_gap=settings.audit_checkpoint_every_events,
                min_sequence=min_sequence,
                workers=workers,
            )
    finally:
        engine.dispose()
    if not keys:
        typer.echo("no public key: events removed from the end of the log cannot be detected", err=True)
    if result.ok:
        signed = (
            f"; {result.checkpoints.checkpoints_checked} signed checkpoints, the latest at "
            f"#{result.checkpoints.latest_sequence}"
            if result.checkpoints is not None
            else ""
        )
        typer.echo(
            f"audit log intact: {result.chain.events_checked} events, head #{result.chain.head_sequence} "
            f"{result.chain.head_hash}{signed}"
        )
        return
    typer.echo(
        f"audit log BROKEN at sequence {result.first_broken_sequence}: {result.problem} "
        f"({result.chain.events_checked} events verified)",
        err=True,
    )
    raise typer.Exit(1)


@audit_app.command("prune")
def audit_prune(
    data_dir: DataDir = Path(".datapoort"),
    before: Annotated[
        str | None, typer.Option(help="Remove events before this time (default: now minus the retention period).")
    ] = None,
) -> None:
    """Remove events older than the retention period, keeping a signed anchor so the rest still verifies;
    the pruning is itself an audit event."""
    from datetime import UTC, datetime, timedelta

    from audit import retention
    from gateway.audit_trail import AuditContext, commit_with_event
    from gateway.keys.audit_signing import checkpoint_policy
    from gateway.store.database import create_state_engine, session_factory

    settings = load_settings(data_dir)
    policy = checkpoint_policy(settings)
    if policy is None:
        typer.echo("pruning needs the checkpoint signing key (DATAPOORT_AUDIT_SIGNING_KEY_PATH)", err=True)
        raise typer.Exit(2)
    now = datetime.now(UTC)
    cut = parse_moment(before) or now - timedelta(days=settings.audit_retention_days)
    upgrade_state(settings)
    engine = create_state_engine(settings.state_database_url)
    try:
        with session_factory(engine, policy)() as session:
            pruned = retention.prune(session, policy.signer, before=cut, now=now)
            context = AuditContext.for_system(cli_actor(), action="audit:prune", instance=settings.instance)
            context.event.query = f"prune before {cut.isoformat()}"
            detail = json.dumps({"events_removed": pruned.events_removed, "anchor_sequence": pruned.anchor_sequence})
            commit_with_event(session, context, context.finish(decision="allow", detail=detail))
    finally:
        engine.dispose()
    typer.echo(f"removed {pruned.events_removed} events before {cut.isoformat()}; anchor at {pruned.anchor_sequence}")


@audit_app.command("keygen")
def audit_keygen(
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Where to write the key pair.")] = Path(".datapoort"),
) -> None:
    """Create an Ed25519 key pair for signing checkpoints (the private key mode 0600; never overwritten)."""
    from audit import checkpoints
    from gateway.settings import DEFAULT_PUBLIC_KEY, DEFAULT_SIGNING_KEY

    out_dir.mkdir(parents=True, exist_ok=True)
    private, public = out_dir / DEFAULT_SIGNING_KEY, out_dir / DEFAULT_PUBLIC_KEY
    if private.exists():
        typer.echo(f"{private} exists; rotate by moving it away first (keep its public key for verifying)", err=True)
        raise typer.Exit(1)
    kid = checkpoints.generate_key_pair(private, public)
    typer.echo(f"key {kid}: private {private} (0600), public {public}")
