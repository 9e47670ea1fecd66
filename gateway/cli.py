"""The ``datapoort`` command."""

from __future__ import annotations

import json
import os
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

    from audit import checkpoints
    from gateway.audit_keys import checkpoint_policy
    from gateway.settings import DEFAULT_PUBLIC_KEY, DEFAULT_SIGNING_KEY

    if settings.audit_signing_key_path is None and not (settings.data_dir / DEFAULT_SIGNING_KEY).exists():
        checkpoints.generate_key_pair(settings.data_dir / DEFAULT_SIGNING_KEY, settings.data_dir / DEFAULT_PUBLIC_KEY)
    from gateway.pseudonym_keys import add_version
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


_URL = Annotated[str, typer.Option(envvar="DATAPOORT_URL", help="The gateway.")]
_KEY = Annotated[str | None, typer.Option(envvar="DATAPOORT_API_KEY", help="Your API key.", show_default=False)]


def _post(url: str, path: str, key: str, body: dict[str, Any]) -> Any:
    """One POST to a running gateway; exit 3 if it cannot be reached."""
    import httpx

    try:
        return httpx.post(url.rstrip("/") + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=600)
    except httpx.HTTPError as exc:
        typer.echo(f"cannot reach the gateway at {url}: {type(exc).__name__}", err=True)
        raise typer.Exit(3) from exc


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
    url: _URL = "http://127.0.0.1:8000",
    key: _KEY = None,
    raw: Annotated[bool, typer.Option("--json", help="Print the response as JSON.")] = False,
) -> None:
    """Ask a running gateway an aggregate question (the key comes from DATAPOORT_API_KEY or --key)."""
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
    response = _post(url, "/v1/query/estimate" if estimate else "/v1/query", key, body)
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


def _post_json(url: str, path: str, key: str | None, body: dict[str, Any]) -> dict[str, Any]:
    """POST to a running gateway and return the JSON answer; exit 1 with the error body on a refusal."""
    if key is None:
        typer.echo("give your API key in DATAPOORT_API_KEY (or --key)", err=True)
        raise typer.Exit(2)
    response = _post(url, path, key, body)
    answer: dict[str, Any] = response.json()
    if response.status_code != 200:
        typer.echo(json.dumps(answer, indent=2, ensure_ascii=False), err=True)
        raise typer.Exit(1)
    return answer


@app.command()
def extract(
    dataset: Annotated[str, typer.Option(help="The dataset.")],
    purpose: Annotated[str, typer.Option(help="The purpose the export grant names.")],
    column: Annotated[list[str], typer.Option("--column", help="A column to include; repeatable.")],
    output: Annotated[Path, typer.Option(help="Where to write the extract.")],
    where: Annotated[
        str | None, typer.Option(help='A JSON condition, e.g. {"column": "wijk", "op": "=", "value": "WK001"}.')
    ] = None,
    format: Annotated[str, typer.Option(help="csv, jsonl or parquet (default: from --output's suffix).")] = "",
    spec: Annotated[Path | None, typer.Option(help="The whole specification as a JSON file instead.")] = None,
    url: _URL = "http://127.0.0.1:8000",
    key: _KEY = None,
) -> None:
    """Pull a pseudonymised, k-anonymous extract from a running gateway into a file (streamed)."""
    import httpx

    if key is None:
        typer.echo("give your API key in DATAPOORT_API_KEY (or --key)", err=True)
        raise typer.Exit(2)
    body: dict[str, Any] = (
        json.loads(spec.read_text(encoding="utf-8"))
        if spec is not None
        else {"dataset": dataset, "purpose": purpose, "columns": column}
    )
    if where is not None:
        body["where"] = json.loads(where)
    body.setdefault("format", format or {".jsonl": "jsonl", ".parquet": "parquet"}.get(output.suffix, "csv"))
    headers = {"Authorization": f"Bearer {key}"}
    try:
        with httpx.stream(
            "POST", url.rstrip("/") + "/v1/extracts", json=body, headers=headers, timeout=600
        ) as response:
            if response.status_code != 200:
                typer.echo(response.read().decode(errors="replace"), err=True)
                raise typer.Exit(1)
            with output.open("wb") as handle:
                for chunk in response.iter_bytes():
                    handle.write(chunk)
            facts = {name[len("x-datapoort-") :]: value for name, value in response.headers.items()
                     if name.startswith("x-datapoort-")}  # fmt: skip
    except httpx.HTTPError as exc:
        typer.echo(f"cannot reach the gateway at {url}: {type(exc).__name__}", err=True)
        raise typer.Exit(3) from exc
    typer.echo(
        f"{output}: {facts.get('records')} records (k = {facts.get('k')}, {facts.get('suppressed')} suppressed; "
        f"generalised: {facts.get('generalisations') or 'nothing'}; pseudonym key v{facts.get('pseudonym-version')}; "
        f"extract {facts.get('extract-id')})"
    )


@app.command()
def reidentify(
    pseudonym: Annotated[str, typer.Argument(help="The pseudonym, as the extract shows it.")],
    dataset: Annotated[str, typer.Option(help="The dataset the extract was of.")],
    justification: Annotated[str, typer.Option(help="Why this person must be known (recorded in the audit log).")],
    purpose: Annotated[str, typer.Option(help="The purpose of the reidentify grant.")] = "herleiding",
    url: _URL = "http://127.0.0.1:8000",
    key: _KEY = None,
) -> None:
    """Privacy officer: the identifier behind one pseudonym an extract released."""
    body = {"pseudonym": pseudonym, "dataset": dataset, "purpose": purpose, "justification": justification}
    answer = _post_json(url, "/v1/reidentify", key, body)
    typer.echo(f"{answer['privacy_unit']} = {answer['identifier']} (in {len(answer['extracts'])} extract(s))")


@app.command()
def inzage(
    bsn: Annotated[str | None, typer.Option(help="The person's BSN (found in the catalog's person register).")] = None,
    privacy_unit_id: Annotated[str | None, typer.Option(help="... or the datasets' identifier for them.")] = None,
    url: _URL = "http://127.0.0.1:8000",
    key: _KEY = None,
) -> None:
    """Privacy officer: which extracts released records of one person (AVG art. 15)."""
    body = {"bsn": bsn} if bsn is not None else {"privacy_unit_id": privacy_unit_id}
    answer = _post_json(url, "/v1/audit/subjects/extracts", key, body)
    typer.echo(json.dumps(answer, indent=2, ensure_ascii=False))


pseudonyms_app = typer.Typer(help="Master secrets of partner pseudonyms.", no_args_is_help=True)
app.add_typer(pseudonyms_app, name="pseudonyms")


@pseudonyms_app.command("rotate")
def pseudonyms_rotate(data_dir: DataDir = Path(".datapoort")) -> None:
    """Add a new master secret version (creating the key file, mode 0600, if needed). Extracts made from
    now on get new pseudonyms; older versions stay for re-identification and inzage until removed."""
    from gateway.pseudonym_keys import add_version
    from gateway.settings import DEFAULT_PSEUDONYM_KEYS

    settings = _settings(data_dir)
    path = settings.pseudonym_key_path or settings.data_dir / DEFAULT_PSEUDONYM_KEYS
    version = add_version(path)
    typer.echo(f"pseudonym master secret version {version} added to {path}; restart the gateway to use it")


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
    from gateway.audit_keys import verification_keys
    from gateway.db import create_state_engine, read_snapshot, session_factory

    settings = _settings(data_dir)
    keys = checkpoints.load_public_keys(public_key) if public_key else verification_keys(settings)
    engine = create_state_engine(settings.state_database_url)
    try:
        with session_factory(engine)() as session:
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
    from gateway.audit_keys import checkpoint_policy
    from gateway.audit_trail import AuditContext, commit_with_event
    from gateway.db import create_state_engine, session_factory

    settings = _settings(data_dir)
    policy = checkpoint_policy(settings)
    if policy is None:
        typer.echo("pruning needs the checkpoint signing key (DATAPOORT_AUDIT_SIGNING_KEY_PATH)", err=True)
        raise typer.Exit(2)
    now = datetime.now(UTC)
    cut = _moment(before) or now - timedelta(days=settings.audit_retention_days)
    _upgrade(settings)
    engine = create_state_engine(settings.state_database_url)
    try:
        with session_factory(engine, policy)() as session:
            pruned = retention.prune(session, policy.signer, before=cut, now=now)
            context = AuditContext.for_system(_cli_actor(), action="audit:prune", instance=settings.instance)
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


def main() -> None:
    app()


# Administration on the host: the same changes as /v1/admin, each one audited with before and after.

orgs_app = typer.Typer(help="Organisations (casbin domains).", no_args_is_help=True)
principals_app = typer.Typer(help="Principals and their roles.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
grants_app = typer.Typer(help="Grants and deny rules.", no_args_is_help=True)
purposes_app = typer.Typer(help="The purpose register.", no_args_is_help=True)
for _name, _sub in (
    ("orgs", orgs_app),
    ("principals", principals_app),
    ("keys", keys_app),
    ("grants", grants_app),
    ("purposes", purposes_app),
):
    app.add_typer(_sub, name=_name)


def _cli_actor() -> str:
    """Who an audit event names for work done with the CLI on the host: the operating-system user."""
    import getpass

    return f"system:cli:{getpass.getuser()}"


def _administer(data_dir: Path, work: Any, *, read: bool = False) -> None:
    """Run ``work(session, now)`` on the state database as ``system:cli:<user>``; write its audit event
    (a change's before and after, or the listing) in the same transaction; print the result as JSON."""
    from datetime import UTC, datetime

    from gateway.audit_keys import checkpoint_policy
    from gateway.audit_trail import AuditContext, commit_with_event, describe_change
    from gateway.db import create_state_engine, session_factory
    from policies.exceptions import PolicyError
    from policies.management import Change

    settings = _settings(data_dir)
    _upgrade(settings)
    engine = create_state_engine(settings.state_database_url)
    try:
        with session_factory(engine, checkpoint_policy(settings))() as session:
            context = AuditContext.for_system(
                _cli_actor(), action="admin:read" if read else "admin", instance=settings.instance
            )
            now = datetime.now(UTC)
            try:
                result = work(session, now)
            except PolicyError as exc:
                session.rollback()
                context.event.occurred_at = now
                commit_with_event(
                    session, context, context.finish(decision="deny", reason=exc.code, detail=exc.message)
                )
                typer.echo(json.dumps({"error": exc.code, "detail": exc.message}), err=True)
                raise typer.Exit(1) from exc
            change, output = result if isinstance(result, tuple) else (result, None)
            if isinstance(change, Change):
                detail = describe_change(context, change)
                commit_with_event(session, context, context.finish(decision="allow", detail=detail))
                typer.echo(json.dumps(output if output is not None else change.describe(), indent=2, default=str))
            else:
                commit_with_event(session, context, context.finish(decision="allow", rows_released=len(change or [])))
                typer.echo(json.dumps(change, indent=2, default=str))
    finally:
        engine.dispose()


def _moment(text: str | None) -> Any:
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


Org = Annotated[str | None, typer.Option("--org", help="Only this organisation.")]


@orgs_app.command("list")
def orgs_list(data_dir: DataDir = Path(".datapoort")) -> None:
    from policies import management

    _administer(data_dir, lambda session, now: management.list_organisations(session), read=True)


@orgs_app.command("create")
def orgs_create(
    organisation_id: str,
    name: Annotated[str, typer.Option(help="Display name.")],
    data_dir: DataDir = Path(".datapoort"),
) -> None:
    from policies import management

    _administer(
        data_dir,
        lambda session, now: management.create_organisation(
            session, organisation_id=organisation_id, display_name=name, now=now
        ),
    )


@orgs_app.command("disable")
def orgs_disable(organisation_id: str, data_dir: DataDir = Path(".datapoort")) -> None:
    """Every principal of the organisation fails authentication from now on."""
    from policies import management

    _administer(
        data_dir,
        lambda session, now: management.disable_organisation(session, organisation_id=organisation_id, now=now),
    )


@principals_app.command("list")
def principals_list(org: Org = None, data_dir: DataDir = Path(".datapoort")) -> None:
    from policies import management

    _administer(data_dir, lambda session, now: management.list_principals(session, org), read=True)


@principals_app.command("create")
def principals_create(
    principal_id: str,
    org: Annotated[str, typer.Option("--org", help="Its organisation.")],
    name: Annotated[str, typer.Option(help="Display name.")],
    kind: Annotated[str, typer.Option(help="user, partner or service.")] = "user",
    data_dir: DataDir = Path(".datapoort"),
) -> None:
    from policies import management

    _administer(
        data_dir,
        lambda session, now: management.create_principal(
            session, principal_id=principal_id, display_name=name, organisation=org, kind=kind, now=now
        ),
    )


@principals_app.command("disable")
def principals_disable(principal_id: str, data_dir: DataDir = Path(".datapoort")) -> None:
    from policies import management

    _administer(
        data_dir, lambda session, now: management.disable_principal(session, principal_id=principal_id, now=now)
    )


@principals_app.command("assign-role")
def principals_assign_role(principal_id: str, role: str, data_dir: DataDir = Path(".datapoort")) -> None:
    from policies import management

    _administer(data_dir, lambda session, now: management.assign_role(session, principal_id=principal_id, role=role))


@principals_app.command("remove-role")
def principals_remove_role(principal_id: str, role: str, data_dir: DataDir = Path(".datapoort")) -> None:
    from policies import management

    _administer(data_dir, lambda session, now: management.remove_role(session, principal_id=principal_id, role=role))


@keys_app.command("list")
def keys_list(org: Org = None, data_dir: DataDir = Path(".datapoort")) -> None:
    from policies import management

    _administer(data_dir, lambda session, now: management.list_keys(session, organisation=org), read=True)


@keys_app.command("issue")
def keys_issue(
    principal_id: str,
    label: Annotated[str | None, typer.Option(help="What the key is for.")] = None,
    expires: Annotated[str | None, typer.Option(help="ISO time with zone, e.g. 2027-06-30T00:00Z.")] = None,
    data_dir: DataDir = Path(".datapoort"),
) -> None:
    """Prints the key once; only its hash is kept."""
    from policies import management

    def issue(session: Any, now: Any) -> Any:
        new, change = management.issue_key(
            session, principal_id=principal_id, now=now, label=label, expires_at=_moment(expires)
        )
        return change, {**change.describe(), "token": new.token}

    _administer(data_dir, issue)


@keys_app.command("revoke")
def keys_revoke(key_id: str, data_dir: DataDir = Path(".datapoort")) -> None:
    """The key fails from its next request on."""
    from policies import management

    _administer(data_dir, lambda session, now: management.revoke_key(session, key_id=key_id, now=now))


@purposes_app.command("list")
def purposes_list(data_dir: DataDir = Path(".datapoort")) -> None:
    from policies import management

    _administer(data_dir, lambda session, now: management.list_purposes(session), read=True)


@purposes_app.command("register")
def purposes_register(
    code: str,
    description: Annotated[str, typer.Option(help="What the processing is for.")],
    owner: Annotated[str, typer.Option(help="Who is responsible for it.")],
    uri: Annotated[str | None, typer.Option(help="Its entry in the register of processing activities.")] = None,
    data_dir: DataDir = Path(".datapoort"),
) -> None:
    from policies import management

    _administer(
        data_dir,
        lambda session, now: management.register_purpose(
            session, code=code, description=description, owner=owner, register_uri=uri
        ),
    )


@purposes_app.command("retire")
def purposes_retire(code: str, data_dir: DataDir = Path(".datapoort")) -> None:
    from policies import management

    _administer(data_dir, lambda session, now: management.retire_purpose(session, code=code, now=now))


@grants_app.command("list")
def grants_list(
    org: Org = None,
    include_inactive: Annotated[bool, typer.Option("--all", help="Also expired and revoked grants.")] = False,
    data_dir: DataDir = Path(".datapoort"),
) -> None:
    """Who may do what, on which dataset, for which purpose, on which legal basis, until when."""
    from policies import management

    def listing(session: Any, now: Any) -> Any:
        where = management.GrantFilter(organisation=org, include_inactive=include_inactive, now=now)
        return management.list_grants(session, where) + [
            {"deny_rule": rule} for rule in management.list_deny_rules(session, org)
        ]

    _administer(data_dir, listing, read=True)


@grants_app.command("create")
def grants_create(
    subject: Annotated[str, typer.Option(help="principal:<id> or role:<name>.")],
    org: Annotated[str, typer.Option("--org", help="The organisation (domain).")],
    dataset: Annotated[str, typer.Option(help="A dataset, or a prefix ending in *.")],
    action: Annotated[str, typer.Option(help="aggregate, export, reidentify, audit:read or admin.")],
    purpose: Annotated[str, typer.Option(help="A registered purpose.")],
    basis: Annotated[str, typer.Option(help="AVG art. 6 basis, e.g. public_task.")],
    basis_text: Annotated[str, typer.Option(help="The legal provision, in words.")],
    until: Annotated[str | None, typer.Option(help="End of validity (ISO time with zone).")] = None,
    epsilon: Annotated[float | None, typer.Option(help="Aggregate: epsilon per period.")] = None,
    delta: Annotated[float | None, typer.Option(help="Aggregate: delta per period.")] = None,
    period: Annotated[str | None, typer.Option(help="Aggregate: month or year.")] = None,
    k: Annotated[int | None, typer.Option("--k", help="Export: the smallest equivalence class (default 10).")] = None,
    data_dir: DataDir = Path(".datapoort"),
) -> None:
    from policies import management

    _administer(
        data_dir,
        lambda session, now: management.create_grant(
            session,
            subject=subject,
            domain=org,
            dataset=dataset,
            action=action,
            purpose=purpose,
            legal_basis=basis,
            legal_basis_text=basis_text,
            now=now,
            valid_until=_moment(until),
            epsilon_per_period=epsilon,
            delta_per_period=delta,
            budget_period=period or ("month" if action == "aggregate" else None),
            k_anonymity=k,
        ),
    )


@grants_app.command("revoke")
def grants_revoke(grant_id: int, data_dir: DataDir = Path(".datapoort")) -> None:
    from policies import management

    _administer(data_dir, lambda session, now: management.revoke_grant(session, grant_id=grant_id, now=now))


@grants_app.command("expire")
def grants_expire(
    grant_id: int,
    until: Annotated[str, typer.Option(help="End of validity (ISO time with zone).")],
    data_dir: DataDir = Path(".datapoort"),
) -> None:
    from policies import management

    _administer(
        data_dir,
        lambda session, now: management.expire_grant(session, grant_id=grant_id, valid_until=_moment(until), now=now),
    )


@grants_app.command("deny")
def grants_deny(
    subject: Annotated[str, typer.Option(help="principal:<id> or role:<name>.")],
    org: Annotated[str, typer.Option("--org", help="The organisation (domain).")],
    dataset: Annotated[str, typer.Option(help="A dataset, or a prefix ending in *.")],
    action: Annotated[str, typer.Option(help="The action refused.")],
    purpose: Annotated[str, typer.Option(help="A purpose, or * for all.")] = "*",
    data_dir: DataDir = Path(".datapoort"),
) -> None:
    """A deny rule beats every grant it matches."""
    from policies import management

    _administer(
        data_dir,
        lambda session, now: management.add_deny_rule(
            session, subject=subject, organisation=org, dataset=dataset, action=action, purpose=purpose
        ),
    )


@grants_app.command("undeny")
def grants_undeny(rule_id: int, data_dir: DataDir = Path(".datapoort")) -> None:
    from policies import management

    _administer(data_dir, lambda session, now: management.remove_deny_rule(session, rule_id=rule_id))


if __name__ == "__main__":
    main()
