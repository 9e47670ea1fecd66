"""What every command shares: the root ``datapoort`` app, the data-dir option, settings, migrating the
state database, who the CLI acts as, and reading a time."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from gateway.settings import Settings

app = typer.Typer(help="Datapoort: privacy-preserving data sharing gateway for gemeenten.", no_args_is_help=True)

DataDir = Annotated[
    Path,
    typer.Option("--data-dir", envvar="DATAPOORT_DATA_DIR", help="Where state and demo data live."),
]


def load_settings(data_dir: Path | None = None, **overrides: object) -> Settings:
    values = {key: value for key, value in overrides.items() if value is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    try:
        return Settings(**values)  # type: ignore[arg-type]
    except ValueError as exc:
        typer.echo(f"invalid settings: {exc}", err=True)
        raise typer.Exit(2) from exc


def upgrade_state(settings: Settings) -> None:
    from gateway.store.database import create_state_engine
    from gateway.store.migrate import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_state_engine(settings.state_database_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


def cli_actor() -> str:
    """Who an audit event names for work done with the CLI on the host: the operating-system user."""
    import getpass

    return f"system:cli:{getpass.getuser()}"


def parse_moment(text: str | None) -> Any:
    from datetime import datetime

    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        typer.echo(f"{text!r} is not an ISO time, e.g. 2027-06-30T00:00Z", err=True)
        raise typer.Exit(2) from None
    if moment.tzinfo is None:
        typer.echo(f"give a time zone with {text!r}, e.g. {text}+01:00 or {text}Z", err=True)
        raise typer.Exit(2)
    return moment
