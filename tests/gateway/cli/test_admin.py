"""Administration from the host (`datapoort orgs|principals|keys|grants|purposes`), and a revocation made
by one process obeyed by a gateway running in another within 2 seconds."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from gateway.cli import app

runner = CliRunner()


def _cli(demo_data_dir: Path, *arguments: str, code: int = 0) -> object:
    result = runner.invoke(app, [*arguments, "--data-dir", str(demo_data_dir)])
    assert result.exit_code == code, result.output
    return json.loads(result.stdout) if code == 0 else result.output


def _events(demo_data_dir: Path) -> list[tuple[str, str, str, str | None]]:
    with sqlite3.connect(demo_data_dir / "state.db") as connection:
        rows = connection.execute(
            "SELECT action, decision, principal_id, detail FROM audit_event ORDER BY sequence"
        ).fetchall()
    return [tuple(row) for row in rows]


def test_an_administrator_manages_everything_from_the_host(demo_data_dir: Path) -> None:
    _cli(demo_data_dir, "orgs", "create", "veiligheid", "--name", "Veiligheid")
    _cli(demo_data_dir, "purposes", "register", "inbraakpreventie", "--description", "d", "--owner", "VH")
    _cli(demo_data_dir, "principals", "create", "vera", "--org", "veiligheid", "--name", "Vera")
    _cli(demo_data_dir, "principals", "assign-role", "vera", "analist")
    grant = _cli(
        demo_data_dir,
        "grants", "create", "--subject", "role:analist", "--org", "veiligheid", "--dataset", "woninginbraak",
        "--action", "aggregate", "--purpose", "inbraakpreventie", "--basis", "public_task",
        "--basis-text", "Gemeentewet art. 172", "--epsilon", "2",
    )  # fmt: skip
    assert isinstance(grant, dict)
    assert grant["after"]["epsilon_per_period"] == 2.0
    key = _cli(demo_data_dir, "keys", "issue", "vera", "--label", "laptop", "--expires", "2030-01-01T00:00Z")
    assert isinstance(key, dict)
    assert key["token"].startswith("dpk_")
    listed = _cli(demo_data_dir, "grants", "list", "--org", "veiligheid")
    assert isinstance(listed, list)
    assert [g["dataset"] for g in listed] == ["woninginbraak"]
    keys = _cli(demo_data_dir, "keys", "list", "--org", "veiligheid")
    assert isinstance(keys, list)
    assert "token" not in keys[0]
    assert "secret" not in json.dumps(keys)
    _cli(demo_data_dir, "keys", "revoke", key["after"]["id"])
    _cli(demo_data_dir, "grants", "revoke", str(grant["after"]["id"]))
    refused = _cli(demo_data_dir, "grants", "revoke", str(grant["after"]["id"]), code=1)
    assert "already revoked" in str(refused)
    _cli(demo_data_dir, "keys", "revoke", "nope", code=1)
    changes = [event for event in _events(demo_data_dir) if str(event[2]).startswith("system:cli:")]
    kinds = [
        json.loads(event[3] or "{}")["what"] if event[1] == "allow" else None
        for event in changes
        if event[0] == "admin"
    ]
    assert kinds == [
        "organisation.create",
        "purpose.register",
        "principal.create",
        "principal.assign_role",
        "grant.create",
        "key.issue",
        "key.revoke",
        "grant.revoke",
        None,  # the refused second revocation: recorded as a denial
        None,
    ]
    assert [event[1] for event in changes if event[0] == "admin"][-2:] == ["deny", "deny"]
    assert key["token"] not in json.dumps(_events(demo_data_dir))
    verify = runner.invoke(app, ["audit", "verify", "--data-dir", str(demo_data_dir)])
    assert verify.exit_code == 0, verify.output


def test_times_without_a_zone_are_refused(demo_data_dir: Path) -> None:
    result = runner.invoke(
        app,
        ["keys", "issue", "analist-sociaal-domein", "--expires", "2030-01-01T00:00", "--data-dir", str(demo_data_dir)],
    )
    assert result.exit_code == 2


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_revocation_in_one_process_is_obeyed_by_a_gateway_in_another_within_two_seconds(demo_data_dir: Path) -> None:
    port = _free_port()
    environment = {**os.environ, "DATAPOORT_DATA_DIR": str(demo_data_dir), "DATAPOORT_PORT": str(port)}
    environment.pop("DATAPOORT_POLICY_POLL_SECONDS", None)  # the default, as deployed
    server = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        keys = json.loads((demo_data_dir / "demo-keys.json").read_text())
        headers = {"Authorization": f"Bearer {keys['analyst']}"}
        body = {"purpose": "beleidsinformatie", "sql": "SELECT COUNT(*) FROM residents", "epsilon": 0.01}
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.post(f"{base}/v1/query", json=body, headers=headers).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.1)
        grants = _cli(demo_data_dir, "grants", "list", "--org", "sociaal-domein")
        assert isinstance(grants, list)
        residents = next(g for g in grants if g.get("dataset") == "residents")
        revoke = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "grants", "revoke", str(residents["id"])],
            env=environment,
            capture_output=True,
            check=True,
        )
        revoked = time.monotonic()
        assert revoke.returncode == 0
        while (response := httpx.post(f"{base}/v1/query", json=body, headers=headers)).status_code == 200:
            assert time.monotonic() - revoked < 2.0, "the revocation was not obeyed within 2 seconds"
            time.sleep(0.05)
        assert response.status_code == 403
        assert time.monotonic() - revoked < 2.0
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.parametrize(
    ("arguments", "code"),
    [
        (["keys", "issue", "analist-sociaal-domein", "--expires", "next tuesday"], 2),
        (
            [
                "grants", "create", "--subject", "role:analist", "--org", "sociaal-domein", "--dataset", "bijstand",
                "--action", "aggregate", "--purpose", "beleidsinformatie", "--basis", "public_task",
                "--basis-text", "x", "--epsilon", "inf",
            ],
            1,
        ),
        (["principals", "create", "p2", "--org", "sociaal-domein", "--name", "P", "--kind", "robot"], 1),
        (["principals", "create", "oidc:someone", "--org", "sociaal-domein", "--name", "P"], 1),
    ],
)  # fmt: skip
def test_bad_administration_is_refused_with_a_reason(demo_data_dir: Path, arguments: list[str], code: int) -> None:
    result = runner.invoke(app, [*arguments, "--data-dir", str(demo_data_dir)])
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output


def test_the_remaining_commands_change_what_they_say_and_are_audited(demo_data_dir: Path) -> None:
    _cli(demo_data_dir, "orgs", "create", "veiligheid", "--name", "Veiligheid")
    _cli(demo_data_dir, "principals", "create", "vera", "--org", "veiligheid", "--name", "Vera")
    _cli(demo_data_dir, "principals", "assign-role", "vera", "analist")
    removed = _cli(demo_data_dir, "principals", "remove-role", "vera", "analist")
    assert isinstance(removed, dict)
    assert (removed["before"]["roles"], removed["after"]["roles"]) == (["analist"], [])
    denied = _cli(
        demo_data_dir, "grants", "deny", "--subject", "principal:vera", "--org", "veiligheid",
        "--dataset", "*", "--action", "export",
    )  # fmt: skip
    assert isinstance(denied, dict)
    _cli(demo_data_dir, "grants", "undeny", str(denied["after"]["id"]))
    listed = _cli(demo_data_dir, "grants", "list", "--org", "sociaal-domein")
    assert isinstance(listed, list)
    residents = next(g for g in listed if g.get("dataset") == "residents")
    expired = _cli(demo_data_dir, "grants", "expire", str(residents["id"]), "--until", residents["valid_from"])
    assert isinstance(expired, dict)
    assert expired["after"]["valid_until"] == residents["valid_from"]
    _cli(demo_data_dir, "purposes", "register", "x-doel", "--description", "d", "--owner", "o")
    retired = _cli(demo_data_dir, "purposes", "retire", "x-doel")
    assert isinstance(retired, dict)
    assert retired["after"]["retired_at"] is not None
    disabled = _cli(demo_data_dir, "principals", "disable", "vera")
    assert isinstance(disabled, dict)
    assert disabled["after"]["disabled_at"] is not None
    _cli(demo_data_dir, "orgs", "disable", "veiligheid")
    organisations = _cli(demo_data_dir, "orgs", "list")
    assert isinstance(organisations, list)
    assert next(o for o in organisations if o["id"] == "veiligheid")["disabled_at"] is not None
    assert isinstance(_cli(demo_data_dir, "purposes", "list"), list)
    assert isinstance(_cli(demo_data_dir, "principals", "list", "--org", "veiligheid"), list)
    what = [
        json.loads(detail or "{}").get("what")
        for action, decision, _, detail in _events(demo_data_dir)
        if action == "admin" and decision == "allow" and detail and detail.startswith("{")
    ]
    assert what[-8:] == [
        "principal.remove_role",
        "deny.add",
        "deny.remove",
        "grant.expire",
        "purpose.register",
        "purpose.retire",
        "principal.disable",
        "organisation.disable",
    ]
