"""The analyst's, partner's and privacy officer's commands against a running gateway: questions,
extracts, re-identification and inzage, over HTTP with the caller's own key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from gateway.cli.base import app
from gateway.cli.progress import progress


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
            encoded = "content-encoding" in response.headers  # then the length is not of the bytes written
            size = None if encoded else response.headers.get("content-length")  # a stream has none: a pulse
            with (
                output.open("wb") as handle,
                progress(f"Extract to {output}", int(size) if size else None, transfer=True) as advance,
            ):
                for chunk in response.iter_bytes():
                    handle.write(chunk)
                    advance(len(chunk))
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
