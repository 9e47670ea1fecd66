"""The operator's datasets: ingesting file-backed datasets into verified snapshots."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from gateway.cli.base import DataDir, app, cli_actor, load_settings, upgrade_state

datasets_app = typer.Typer(help="Datasets and their verified snapshots.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")


@datasets_app.command("ingest")
def datasets_ingest(
    names: Annotated[
        list[str] | None, typer.Argument(help="Datasets to ingest (default: every file-backed one).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Ingest even if the snapshot is of the file as it is.")
    ] = False,
    data_dir: DataDir = Path(".datapoort"),
) -> None:
    """Check and convert file-backed datasets into verified snapshots (types, encoding, bounded
    contributions); a running gateway reads a new snapshot from its next query on. Prints what each
    ingestion found (also in the audit log); exits 1 if one failed."""
    from gateway.data.catalog import load_catalog
    from gateway.data.ingestion import ingest_catalog, snapshot_datasets
    from gateway.exceptions import CatalogError
    from gateway.http.app import snapshot_store
    from gateway.keys.audit_signing import checkpoint_policy
    from gateway.store.database import create_state_engine, session_factory

    settings = load_settings(data_dir)
    try:
        catalog = load_catalog(settings.catalog_path)
    except CatalogError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    known = snapshot_datasets(catalog)
    unknown = sorted(set(names or ()) - set(known))
    if unknown:
        typer.echo(f"not file-backed aggregate datasets of the catalog: {', '.join(unknown)}", err=True)
        raise typer.Exit(2)
    upgrade_state(settings)
    engine = create_state_engine(settings.state_database_url)
    try:
        outcomes = ingest_catalog(
            snapshot_store(settings),
            catalog,
            session_factory(engine, checkpoint_policy(settings)),
            actor=cli_actor(),
            instance=settings.instance,
            names=names or known,
            force=force,
        )
    finally:
        engine.dispose()
    for outcome in outcomes:
        if outcome.error is not None:
            typer.echo(f"{outcome.dataset}: FAILED: {outcome.error}", err=True)
        elif outcome.report is None:
            typer.echo(f"{outcome.dataset}: snapshot is current")
        else:
            typer.echo(f"{outcome.dataset}: {json.dumps(asdict(outcome.report))}")
    if any(outcome.error is not None for outcome in outcomes):
        raise typer.Exit(1)
