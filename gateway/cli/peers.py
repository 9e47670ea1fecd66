"""Comparing gemeenten: the register of peer gateways (administration, on the host) and ``compare`` (a caller
of a running gateway)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from gateway.cli.admin import _administer
from gateway.cli.base import DataDir, app, load_settings
from gateway.cli.client import _KEY, _URL, _post_json

peers_app = typer.Typer(help="Peer gateways of other gemeenten, for comparisons.", no_args_is_help=True)
app.add_typer(peers_app, name="peers")


@peers_app.command("list", help="The peer gateways of other gemeenten this one may compare with.")
def peers_list(data_dir: DataDir = Path(".datapoort")) -> None:
    from policies import peers

    _administer(data_dir, lambda session, now: peers.list_peers(session), read=True)


@peers_app.command("add")
def peers_add(
    name: str,
    gemeente: Annotated[str, typer.Option(help="The gemeente, as comparisons name it.")],
    url: Annotated[str, typer.Option(help="The peer gateway's base URL (https://...).")],
    key_file: Annotated[Path, typer.Option(help="A file holding the key the peer issued to this gemeente.")],
    tls: Annotated[str, typer.Option(help="verify, ca_file or plain_loopback.")] = "verify",
    ca_file: Annotated[str | None, typer.Option(help="The peer's CA bundle (with --tls ca_file).")] = None,
    data_dir: DataDir = Path(".datapoort"),
) -> None:
    """Register a peer; its key is copied into a 0600 file under the data dir, never into the database."""
    from gateway.keys.peer_credentials import write_credential
    from policies import peers
    from policies.exceptions import PolicyConflict

    settings = load_settings(data_dir)
    secret = key_file.read_text(encoding="utf-8").strip()

    def register(session: Any, now: Any) -> Any:
        if tls == "plain_loopback" and not settings.allow_plain_loopback_peers:
            raise PolicyConflict("plain HTTP peers are off on this gateway (DATAPOORT_ALLOW_PLAIN_LOOPBACK_PEERS)")
        change = peers.register_peer(session, name=name, gemeente=gemeente, url=url, tls=tls, ca_file=ca_file, now=now)
        write_credential(settings.data_dir, name, secret)
        return change

    _administer(data_dir, register)


@peers_app.command("disable", help="Stop asking a peer gateway in comparisons (audited).")
def peers_disable(name: str, data_dir: DataDir = Path(".datapoort")) -> None:
    from policies import peers

    _administer(data_dir, lambda session, now: peers.disable_peer(session, name=name, now=now))


@app.command()
def compare(
    purpose: Annotated[str, typer.Option(help="The registered purpose of this question.")],
    sql: Annotated[str, typer.Option(help="The question in the SQL subset.")],
    peer: Annotated[list[str] | None, typer.Option(help="A peer to ask (repeat; default: every peer).")] = None,
    epsilon: Annotated[float | None, typer.Option(help="Privacy loss each gemeente spends.")] = None,
    url: _URL = "http://127.0.0.1:8000",
    key: _KEY = None,
    raw: Annotated[bool, typer.Option("--json", help="Print the response as JSON.")] = False,
) -> None:
    """Ask this gemeente and its peers the same DP question; each answers under its own budget."""
    body: dict[str, Any] = {"purpose": purpose, "sql": sql}
    if peer:
        body["peers"] = peer
    if epsilon is not None:
        body["epsilon"] = epsilon
    answer = _post_json(url, "/v1/compare", key, body)
    if raw:
        typer.echo(json.dumps(answer, indent=2, ensure_ascii=False))
        return
    for entry in answer["gemeenten"]:
        if entry["status"] != "answered":
            typer.echo(f"{entry['gemeente']}: {entry['status']} ({entry.get('error') or entry.get('detail')})")
            continue
        typer.echo(f"{entry['gemeente']} (epsilon {entry['epsilon_spent']:g}):")
        typer.echo("  " + "\t".join(entry["columns"]))
        for row in entry["rows"]:
            typer.echo("  " + "\t".join("" if value is None else f"{value}" for value in row))
