"""Serving the API, the demo gemeente, and migrating the state database."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gateway.cli.base import DataDir, app, load_settings, upgrade_state
from gateway.settings import Settings

db_app = typer.Typer(help="The state database.", no_args_is_help=True)
app.add_typer(db_app, name="db")

EXAMPLE_SQL = "SELECT wijk, COUNT(*) FROM residents GROUP BY wijk"


def _serve(settings: Settings) -> None:
    import uvicorn

    from gateway.data.catalog import load_catalog
    from gateway.exceptions import CatalogError
    from gateway.http.app import create_app
    from gateway.http.logging_setup import log_config

    try:
        load_catalog(settings.catalog_path)
    except CatalogError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        log_config=log_config(settings.log_format),
        server_header=False,
        # X-Forwarded-For only from the proxies the operator names: otherwise any local client could
        # choose the client address its audit events record.
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=",".join(settings.trusted_proxies) or None,
    )


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDir = Path(".datapoort")) -> None:
    """Apply all migrations to the state database."""
    settings = load_settings(data_dir)
    upgrade_state(settings)
    typer.echo(f"state database at head: {settings.state_database_url.split('@')[-1]}")


@app.command()
def serve(
    data_dir: DataDir = Path(".datapoort"),
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    no_signing: Annotated[
        bool,
        typer.Option(
            "--no-signing", help="Serve without an audit signing key: a cut end of the log cannot be detected."
        ),
    ] = False,
) -> None:
    """Migrate the state database and serve the API (refused without an audit signing key)."""
    settings = load_settings(data_dir, host=host, port=port)
    if settings.signing_key_file is None and not no_signing:
        # Without signed checkpoints, removing the newest events leaves a log that still verifies: the
        # privacy officer could not tell. Serving so must be a choice, said out loud.
        typer.echo(
            "no audit signing key: set DATAPOORT_AUDIT_SIGNING_KEY_PATH (`datapoort audit keygen` makes one) "
            "or start with --no-signing",
            err=True,
        )
        raise typer.Exit(2)
    if settings.signing_key_file is None:
        typer.echo("serving WITHOUT an audit signing key (--no-signing)", err=True)
    upgrade_state(settings)
    _serve(settings)


COMPARE_SQL = (
    "SELECT r.wijk, COUNT(*) * 1000.0 / k.inwoners AS per_1000 FROM jeugdzorg j "
    "JOIN residents r ON j.person_id = r.person_id JOIN kerncijfers k ON r.wijk = k.wijk GROUP BY r.wijk"
)


@app.command()
def demo(
    data_dir: DataDir = Path(".datapoort"),
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    residents: Annotated[
        int, typer.Option(min=1, help="Residents of Voorbeeldstad (only when the data is built).")
    ] = 100_000,
    serve_api: Annotated[bool, typer.Option("--serve/--no-serve", help="Serve after setting up.")] = True,
    gemeenten: Annotated[
        int, typer.Option(min=1, max=5, help="Gemeenten, each its own process and port, peered to compare.")
    ] = 1,
) -> None:
    """Build the demo gemeente Voorbeeldstad (if absent), provision demo keys, and serve it."""
    if gemeenten > 1:
        _demo_gemeenten(data_dir, host, port, residents, gemeenten, serve_api)
        return
    settings = _set_up_demo(load_settings(data_dir, host=host, port=port), residents)
    _print_demo(settings)
    if serve_api:
        _serve(settings)


def _set_up_demo(settings: Settings, residents: int, gemeente: str | None = None, seed: int | None = None) -> Settings:
    """Build the demo data (if absent), its keys and its principals; the settings that serve it."""
    from gateway.cli.progress import progress
    from gateway.demo import generator, setup
    from gateway.store.database import create_state_engine, session_factory

    upgrade_state(settings)
    # The demo data and its catalog live in the data dir itself, where `serve` looks by default.
    settings = settings.model_copy(update={"catalog": None})
    if not settings.catalog_path.is_file():
        name = gemeente or generator.GEMEENTE_NAME
        typer.echo(f"building {name} with {residents:,} residents in {settings.data_dir} ...")
        with progress(f"building {name}"):
            built = generator.generate(
                settings.data_dir,
                residents=residents,
                gemeente=name,
                seed=generator.DEFAULT_SEED if seed is None else seed,
            )
        typer.echo("  " + ", ".join(f"{name}: {rows:,} rows" for name, rows in built.rows.items()))

    from audit import checkpoints
    from gateway.keys.audit_signing import checkpoint_policy
    from gateway.settings import DEFAULT_PUBLIC_KEY, DEFAULT_SIGNING_KEY

    if settings.audit_signing_key_path is None and not (settings.data_dir / DEFAULT_SIGNING_KEY).exists():
        checkpoints.generate_key_pair(settings.data_dir / DEFAULT_SIGNING_KEY, settings.data_dir / DEFAULT_PUBLIC_KEY)
    from gateway.keys.pseudonym_secrets import add_version
    from gateway.settings import DEFAULT_PSEUDONYM_KEYS

    no_secrets = settings.pseudonym_key_path is None and settings.pseudonym_master_keys is None
    if no_secrets and not (settings.data_dir / DEFAULT_PSEUDONYM_KEYS).exists():
        add_version(settings.data_dir / DEFAULT_PSEUDONYM_KEYS)
    engine = create_state_engine(settings.state_database_url)
    try:
        setup.provision(
            session_factory(engine, checkpoint_policy(settings)), settings.data_dir, instance=settings.instance
        )
    finally:
        engine.dispose()
    return settings


def _print_demo(settings: Settings) -> None:
    from gateway.demo import setup

    keys_file = settings.data_dir / setup.KEYS_FILE
    base = f"http://{settings.host}:{settings.port}"
    read_key = f"python3 -c \"import json;print(json.load(open('{keys_file}'))['analyst'])\""
    typer.echo(
        f"""
Voorbeeldstad is ready. API keys (analyst, partner, privacy_officer, admin): {keys_file} (mode 0600)
  OpenAPI docs:  {base}/docs
  Ask a DP count per wijk as the analyst:
    KEY=$({read_key})
    curl -s {base}/v1/query -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \\
      -d '{{"purpose": "beleidsinformatie", "sql": "{EXAMPLE_SQL}"}}'
  The partner's key gets 403 for the same request. Who may do what, for which purpose, on which basis
  (as the admin or the privacy officer):
    ADMIN_KEY=$({read_key.replace("['analyst']", "['admin']")})
    curl -s {base}/v1/admin/grants -H "Authorization: Bearer $ADMIN_KEY"
  or on this host: datapoort grants list --data-dir {settings.data_dir}. Check the audit chain:
    datapoort audit verify --data-dir {settings.data_dir}
  Pull a pseudonymised, k-anonymous extract of jeugdzorg as the partner (CSV, JSON lines or Parquet):
    DATAPOORT_API_KEY=$({read_key.replace("['analyst']", "['partner']")}) datapoort extract \\
      --dataset jeugdzorg --purpose jeugdhulp-evaluatie \\
      --column person_id --column wijk --column start_date --column zorgvorm --output jeugdzorg.csv
  As the privacy officer, re-identify one pseudonym from it (with a justification), or list the extracts
  that held a person (inzage): datapoort reidentify --help, datapoort inzage --help
"""
    )


def _demo_gemeenten(data_dir: Path, host: str, port: int, residents: int, count: int, serve_api: bool) -> None:
    """Several demo gemeenten in data_dir/gemeente-N on port, port + 1, ...: the first served here, the
    others in processes of their own, every one a peer of every other."""
    import os
    import subprocess
    import sys

    from gateway.demo import gemeenten, setup
    from gateway.store.database import create_state_engine, session_factory

    everyone = []
    for index in range(count):
        settings = load_settings(data_dir / gemeenten.organisation_of(index), host=host, port=port + index)
        settings = settings.model_copy(update={"allow_plain_loopback_peers": True})
        # Different sizes and draws, so the gemeenten differ.
        everyone.append(
            _set_up_demo(settings, max(residents // (index + 1), 1), gemeenten.NAMES[index], 20261203 + index)
        )
    engines = [create_state_engine(settings.state_database_url) for settings in everyone]
    try:
        sessions = [session_factory(engine) for engine in engines]
        for host_index, host_settings in enumerate(everyone):
            for guest_index in range(count):
                if guest_index == host_index:
                    continue
                token = gemeenten.admit(sessions[host_index], gemeenten.organisation_of(guest_index))
                guest = everyone[guest_index]
                gemeenten.register(
                    sessions[guest_index], guest.data_dir, name=gemeenten.organisation_of(host_index),
                    gemeente=gemeenten.NAMES[host_index], url=f"http://{host_settings.host}:{host_settings.port}",
                    secret=token,
                )  # fmt: skip
    finally:
        for engine in engines:
            engine.dispose()
    first = everyone[0]
    key_file = first.data_dir / setup.KEYS_FILE
    typer.echo(
        f"""
{count} gemeenten: {", ".join(f"{gemeenten.NAMES[i]} on port {s.port}" for i, s in enumerate(everyone))}.
As {gemeenten.NAMES[0]}'s analyst, compare jeugdzorg per 1,000 inwoners with the others:
  DATAPOORT_API_KEY=$(python3 -c "import json;print(json.load(open('{key_file}'))['analyst'])") \
    datapoort compare --url http://{first.host}:{first.port} --purpose beleidsinformatie --epsilon 0.5 \
    --sql "{COMPARE_SQL}"
"""
    )
    if not serve_api:
        return
    environment = {**os.environ, "DATAPOORT_ALLOW_PLAIN_LOOPBACK_PEERS": "true"}
    children = [
        # This interpreter, serving a data dir of our own making: no input from outside.
        subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "serve",
                "--data-dir",
                str(s.data_dir),
                "--host",
                s.host,
                "--port",
                str(s.port),
            ],
            env=environment,
        )
        for s in everyone[1:]
    ]
    try:
        _serve(first)
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(timeout=30)
