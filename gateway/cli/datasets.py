"""The operator's datasets: ingesting file-backed datasets into verified snapshots."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

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
    from gateway.cli.progress import progress
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
    upgrade_state(settings)
    engine = create_state_engine(settings.state_database_url)
    try:
        catalog = _in_effect(engine, catalog)
        known = snapshot_datasets(catalog)
        unknown = sorted(set(names or ()) - set(known))
        if unknown:
            typer.echo(f"not file-backed aggregate datasets of the catalog: {', '.join(unknown)}", err=True)
            raise typer.Exit(2)
        store, sessions = snapshot_store(settings), session_factory(engine, checkpoint_policy(settings))
        outcomes = []
        chosen = names or known
        with progress("ingesting", total=len(chosen)) as advance:
            for name in chosen:
                outcomes += ingest_catalog(
                    store, catalog, sessions, actor=cli_actor(), instance=settings.instance, names=[name], force=force
                )
                advance(1)
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


def _in_effect(engine: Any, file_catalog: Any) -> Any:
    """The catalog file with the changes recorded while gateways ran."""
    from gateway.data import catalog_changes
    from gateway.store.database import session_factory

    with session_factory(engine)() as session:
        return catalog_changes.current(session, file_catalog)


def _entry_from(spec: Path) -> dict[str, Any]:
    import yaml

    try:
        entry = yaml.safe_load(spec.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        typer.echo(f"cannot read the dataset entry {spec}: {exc}", err=True)
        raise typer.Exit(2) from exc
    if not isinstance(entry, dict):
        typer.echo(f"{spec} must hold one dataset's entry (source, privacy_unit, columns, ...)", err=True)
        raise typer.Exit(2)
    return entry


def _change(data_dir: Path, name: str, spec: Path | None, expect: str) -> None:
    """Validate, ingest and record a change, with its audit event, as the CLI's operator."""
    from gateway.audit_trail import AuditContext, commit_with_event, describe_change
    from gateway.data import catalog_changes
    from gateway.data.catalog import load_catalog, resolved_entry
    from gateway.exceptions import GatewayError
    from gateway.http.app import snapshot_store
    from gateway.keys.audit_signing import checkpoint_policy
    from gateway.store.database import create_state_engine, read_snapshot, session_factory
    from policies.exceptions import PolicyError

    settings = load_settings(data_dir)
    upgrade_state(settings)
    engine = create_state_engine(settings.state_database_url)
    try:
        file_catalog = load_catalog(settings.catalog_path)
        guard = catalog_changes.guard_for(settings, file_catalog, also=(Path.cwd(),))
        # Paths in an entry given on the command line are relative to where the command runs.
        entry = resolved_entry(name, _entry_from(spec), Path.cwd(), readable=guard.readable) if spec else None
        sessions = session_factory(engine, checkpoint_policy(settings))
        context = catalog_changes.CatalogContext(
            file_catalog=file_catalog,
            snapshots=snapshot_store(settings),
            sessions=sessions,
            actor=cli_actor(),
            instance=settings.instance,
            guard=guard,
        )
        with sessions() as session:
            read_snapshot(session)
            prepared = catalog_changes.prepare_change(session, context, name, entry, expect=expect)
        change = prepared.change
        with sessions() as session:
            audit = AuditContext.for_system(cli_actor(), action="admin", instance=settings.instance)
            catalog_changes.record(session, prepared, actor=cli_actor(), now=audit.started_at)
            detail = describe_change(audit, change)
            commit_with_event(session, audit, audit.finish(decision="allow", detail=detail))
    except (GatewayError, PolicyError) as exc:
        typer.echo(f"refused: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    finally:
        engine.dispose()
    typer.echo(f"{change.what} {name}: live in every gateway process within its poll interval")


SpecOption = Annotated[Path, typer.Option("--spec", help="A YAML or JSON file with the dataset's catalog entry.")]


@datasets_app.command("add")
def datasets_add(name: str, spec: SpecOption, data_dir: DataDir = Path(".datapoort")) -> None:
    """Add a dataset without a restart: validated, ingested, audited, live in every process."""
    _change(data_dir, name, spec, "new")


@datasets_app.command("update")
def datasets_update(name: str, spec: SpecOption, data_dir: DataDir = Path(".datapoort")) -> None:
    """Replace a dataset's catalog entry without a restart (validated, ingested, audited)."""
    _change(data_dir, name, spec, "existing")


@datasets_app.command("remove")
def datasets_remove(name: str, data_dir: DataDir = Path(".datapoort")) -> None:
    """Remove a dataset from the catalog without a restart (audited; its spends stay in the ledger)."""
    _change(data_dir, name, None, "existing")


@datasets_app.command("list")
def datasets_list(data_dir: DataDir = Path(".datapoort")) -> None:
    """The catalog's datasets in effect: the catalog file with the changes made since."""
    from gateway.data.catalog import load_catalog
    from gateway.store.database import create_state_engine

    settings = load_settings(data_dir)
    upgrade_state(settings)
    engine = create_state_engine(settings.state_database_url)
    try:
        catalog = _in_effect(engine, load_catalog(settings.catalog_path))
    finally:
        engine.dispose()
    for name, dataset in sorted(catalog.datasets.items()):
        unit = dataset.privacy_unit or "-"
        typer.echo(f"{name}  {dataset.kind}  {dataset.source.kind}  unit {unit}  {len(dataset.columns)} columns")
