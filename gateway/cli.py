"""The ``datapoort`` command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from gateway.settings import Settings

app = typer.Typer(help="Datapoort: privacy-preserving data sharing gateway for gemeenten.", no_args_is_help=True)
db_app = typer.Typer(help="The state database.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit log.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(audit_app, name="audit")

EXAMPLE_SQL = "SELECT wijk, COUNT(*) FROM residents GROUP BY wijk"

DataDir = Annotated[
    Path,
    typer.Option("--data-dir", envvar="DATAPOORT_DATA_DIR", help="Where state and demo data live."),
]


def _settings(data_dir: Path | None = None, **overrides: object) -> Settings:
    values = {key: value for key, value in overrides.items() if value is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    try:
        return Settings(**values)  # type: ignore[arg-type]
    except ValueError as exc:
        typer.echo(f"invalid settings: {exc}", err=True)
        raise typer.Exit(2) from exc


def _upgrade(settings: Settings) -> None:
    from gateway.db import create_state_engine
    from gateway.migrate import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_state_engine(settings.state_database_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


def _serve(settings: Settings) -> None:
    import uvicorn

    from gateway.app import create_app
    from gateway.catalog import load_catalog
    from gateway.exceptions import CatalogError

    try:
        load_catalog(settings.catalog_path)
    except CatalogError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDir = Path(".datapoort")) -> None:
    """Apply all migrations to the state database."""
    settings = _settings(data_dir)
    _upgrade(settings)
    typer.echo(f"state database at head: {settings.state_database_url.split('@')[-1]}")


@app.command()
def serve(
    data_dir: DataDir = Path(".datapoort"),
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
) -> None:
    """Migrate the state database and serve the API."""
    settings = _settings(data_dir, host=host, port=port)
    _upgrade(settings)
    _serve(settings)


@app.command()
def demo(
    data_dir: DataDir = Path(".datapoort"),
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    residents: Annotated[
        int, typer.Option(min=1, help="Residents of Voorbeeldstad (only when the data is built).")
    ] = 100_000,
    serve_api: Annotated[bool, typer.Option("--serve/--no-serve", help="Serve after setting up.")] = True,
) -> None:
    """Build the demo gemeente Voorbeeldstad (if absent), provision demo keys, and serve it."""
    from gateway.db import create_state_engine, session_factory
    from gateway.demo import generator, setup

    settings = _settings(data_dir, host=host, port=port)
    _upgrade(settings)
    # The demo data and its catalog live in the data dir itself, where `serve` looks by default.
    settings = settings.model_copy(update={"catalog": None})
    if not settings.catalog_path.is_file():
        typer.echo(f"building Voorbeeldstad with {residents:,} residents in {settings.data_dir} ...")
        built = generator.generate(settings.data_dir, residents=residents)
        typer.echo("  " + ", ".join(f"{name}: {rows:,} rows" for name, rows in built.rows.items()))

    engine = create_state_engine(settings.state_database_url)
    try:
        setup.provision(session_factory(engine), settings.data_dir, instance=settings.instance)
    finally:
        engine.dispose()
    keys_file = settings.data_dir / setup.KEYS_FILE
    base = f"http://{settings.host}:{settings.port}"
    read_key = f"python3 -c \"import json;print(json.load(open('{keys_file}'))['analyst'])\""
    typer.echo(
        f"""
Voorbeeldstad is ready. API keys (analyst, partner, privacy_officer): {keys_file} (mode 0600)
  OpenAPI docs:  {base}/docs
  Ask a DP count per wijk as the analyst:
    KEY=$({read_key})
    curl -s {base}/v1/query -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \\
      -d '{{"purpose": "beleidsinformatie", "sql": "{EXAMPLE_SQL}"}}'
  The partner's key gets 403 for the same request. Check the audit chain:
    datapoort audit verify --data-dir {settings.data_dir}
"""
    )
    if serve_api:
        _serve(settings)


def _print_answer(body: dict[str, Any]) -> None:
    columns = body["columns"]
    rows = [
        ["" if value is None else (f"{value:.6g}" if isinstance(value, float) else str(value)) for value in row]
        for row in body["rows"]
    ]
    widths = [max([len(str(column)), *(len(row[index]) for row in rows)]) for index, column in enumerate(columns)]
    typer.echo("  ".join(str(column).rjust(width) for column, width in zip(columns, widths, strict=True)))
    for row in rows:
        typer.echo("  ".join(value.rjust(width) for value, width in zip(row, widths, strict=True)))
    privacy = body["privacy"]
    delta = f", delta {privacy['delta_spent']:.3g}" if privacy.get("delta_spent") else ""
    typer.echo(
        f"\nepsilon spent {privacy['epsilon_spent']:.6g}{delta}, {privacy['budget']['epsilon_remaining']:.6g} left "
        f"this {privacy['budget']['period']}; per aggregate at {privacy['confidence']:.0%} confidence:"
    )
    selection = privacy.get("group_selection")
    if selection:
        typer.echo(
            f"  groups: {selection['mechanism']} at threshold {selection['threshold']} rows; groups of "
            f"{selection['reliable_count']}+ rows are released with that confidence, small ones never"
        )
    for name, report in privacy["aggregates"].items():
        accuracy = report.get("half_width")
        if isinstance(accuracy, list):
            accuracy = f"±{max(accuracy):.4g} at most" if accuracy else "-"
        elif accuracy is not None:
            accuracy = f"±{accuracy:.4g}"
        else:
            accuracy = f"rank ±{report.get('rank_half_width', 0):.4g} rows"
        typer.echo(f"  {name}: {report['mechanism']}, {accuracy}")


@app.command()
def query(
    purpose: Annotated[str, typer.Option(help="The registered purpose (doelbinding) of this question.")],
    sql: Annotated[str | None, typer.Option(help="The question in the SQL subset.")] = None,
    plan: Annotated[Path | None, typer.Option(help="The question as a JSON plan file, instead of --sql.")] = None,
    epsilon: Annotated[float | None, typer.Option(help="Privacy loss to spend.")] = None,
    accuracy: Annotated[float | None, typer.Option(help="Ask for ± this (95%) on counts and sums instead.")] = None,
    delta: Annotated[
        float | None, typer.Option(help="Delta for choosing groups of a column without public keys.")
    ] = None,
    estimate: Annotated[bool, typer.Option("--estimate", help="Only say what it would cost.")] = False,
    url: Annotated[str, typer.Option(envvar="DATAPOORT_URL", help="The gateway.")] = "http://127.0.0.1:8000",
    key: Annotated[
        str | None, typer.Option(envvar="DATAPOORT_API_KEY", help="Your API key.", show_default=False)
    ] = None,
    raw: Annotated[bool, typer.Option("--json", help="Print the response as JSON.")] = False,
) -> None:
    """Ask a running gateway an aggregate question (the key comes from DATAPOORT_API_KEY or --key)."""
    import httpx

    if key is None:
        typer.echo("give your API key in DATAPOORT_API_KEY (or --key)", err=True)
        raise typer.Exit(2)
    if (sql is None) == (plan is None):
        typer.echo("give exactly one of --sql and --plan", err=True)
        raise typer.Exit(2)
    body: dict[str, Any] = {"purpose": purpose}
    if sql is not None:
        body["sql"] = sql
    elif plan is not None:
        body["plan"] = json.loads(plan.read_text(encoding="utf-8"))
    if epsilon is not None:
        body["epsilon"] = epsilon
    if accuracy is not None:
        body["accuracy"] = {"half_width": accuracy}
    if delta is not None:
        body["delta"] = delta
    endpoint = "/v1/query/estimate" if estimate else "/v1/query"
    try:
        response = httpx.post(
            url.rstrip("/") + endpoint, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=120
        )
    except httpx.HTTPError as exc:
        typer.echo(f"cannot reach the gateway at {url}: {type(exc).__name__}", err=True)
        raise typer.Exit(3) from exc
    answer = response.json()
    if raw or response.status_code != 200:
        typer.echo(json.dumps(answer, indent=2, ensure_ascii=False))
        if response.status_code != 200:
            raise typer.Exit(1)
        return
    if estimate:
        typer.echo(
            f"epsilon {answer['epsilon']:.6g}, delta {answer['delta']:.3g}; "
            f"affordable: {answer['budget']['affordable']}"
        )
        if answer.get("group_selection"):
            typer.echo(f"  groups: threshold {answer['group_selection']['threshold']} rows")
        for name, report in answer["aggregates"].items():
            typer.echo(f"  {name}: {report['mechanism']}, half-width {report.get('half_width')}")
        return
    _print_answer(answer)


@audit_app.command("verify")
def audit_verify(data_dir: DataDir = Path(".datapoort")) -> None:
    """Recompute the audit hash chain; exit 1 at the first broken event."""
    from audit.service import verify_chain
    from gateway.db import create_state_engine, session_factory

    settings = _settings(data_dir)
    engine = create_state_engine(settings.state_database_url)
    try:
        with session_factory(engine)() as session:
            result = verify_chain(session)
    finally:
        engine.dispose()
    if result.ok:
        typer.echo(
            f"audit chain intact: {result.events_checked} events, head #{result.head_sequence} {result.head_hash}"
        )
        return
    typer.echo(
        f"audit chain BROKEN at sequence {result.first_broken_sequence}: {result.problem} "
        f"({result.events_checked} events verified before it)",
        err=True,
    )
    raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
