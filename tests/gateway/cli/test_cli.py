"""The `datapoort` command: demo set-up, migrations, and audit verification on a data dir."""

from __future__ import annotations

import json
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import app

runner = CliRunner()


def test_demo_builds_data_and_writes_private_keys(demo_data_dir: Path) -> None:
    keys_file = demo_data_dir / "demo-keys.json"
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    keys = json.loads(keys_file.read_text())
    assert set(keys) == {"analyst", "partner", "privacy_officer", "admin"}
    assert all(key.startswith("dpk_") for key in keys.values())
    assert (demo_data_dir / "residents.parquet").is_file()
    assert (demo_data_dir / "catalog.yaml").is_file()
    assert stat.S_IMODE((demo_data_dir / "pseudonym-keys.json").stat().st_mode) == 0o600


def test_demo_grants_the_partner_an_extract_but_no_aggregate_on_residents(demo_data_dir: Path) -> None:
    from gateway.store.database import create_state_engine, session_factory
    from policies.models import Grant

    engine = create_state_engine(f"sqlite:///{demo_data_dir / 'state.db'}")
    with session_factory(engine)() as session:
        grants = {(grant.domain, grant.dataset, grant.action, grant.purpose) for grant in session.query(Grant)}
    engine.dispose()
    assert ("zorgaanbieder-de-brug", "jeugdzorg", "export", "jeugdhulp-evaluatie") in grants
    assert not any(grant[0] == "zorgaanbieder-de-brug" and grant[1] == "residents" for grant in grants)
    assert ("gemeente-voorbeeldstad", "jeugdzorg", "reidentify", "herleiding") in grants


def test_demo_is_idempotent_and_keeps_working_keys(demo_data_dir: Path) -> None:
    first = (demo_data_dir / "demo-keys.json").read_text()
    result = runner.invoke(app, ["demo", "--data-dir", str(demo_data_dir), "--no-serve"])
    assert result.exit_code == 0, result.output
    assert (demo_data_dir / "demo-keys.json").read_text() == first
    assert "building Voorbeeldstad" not in result.output


def test_demo_reissues_keys_when_the_file_is_lost(demo_data_dir: Path) -> None:
    old = json.loads((demo_data_dir / "demo-keys.json").read_text())
    (demo_data_dir / "demo-keys.json").unlink()
    assert runner.invoke(app, ["demo", "--data-dir", str(demo_data_dir), "--no-serve"]).exit_code == 0
    new = json.loads((demo_data_dir / "demo-keys.json").read_text())
    assert new["analyst"] != old["analyst"]


def test_demo_prints_how_to_call_the_api(demo_data_dir: Path) -> None:
    result = runner.invoke(app, ["demo", "--data-dir", str(demo_data_dir), "--no-serve", "--port", "8123"])
    assert "http://127.0.0.1:8123/v1/query" in result.output
    assert "Authorization: Bearer" in result.output
    assert "dpk_" not in result.output  # keys are read from the file, never printed
    assert "datapoort extract" in result.output
    assert "--dataset jeugdzorg --purpose jeugdhulp-evaluatie" in result.output


def test_audit_verify_passes_then_fails_after_tampering(demo_data_dir: Path) -> None:
    ok = runner.invoke(app, ["audit", "verify", "--data-dir", str(demo_data_dir)])
    assert ok.exit_code == 0, ok.output
    assert "intact" in ok.output
    runner.invoke(app, ["demo", "--data-dir", str(demo_data_dir), "--no-serve"])
    (demo_data_dir / "demo-keys.json").unlink()
    runner.invoke(app, ["demo", "--data-dir", str(demo_data_dir), "--no-serve"])  # a second event
    with sqlite3.connect(demo_data_dir / "state.db") as connection:
        connection.execute("UPDATE audit_event SET detail = 'nothing happened' WHERE sequence = 1")
    broken = runner.invoke(app, ["audit", "verify", "--data-dir", str(demo_data_dir)])
    assert broken.exit_code == 1
    assert "BROKEN at sequence 1" in broken.output


def test_audit_verify_finds_a_deleted_event(demo_data_dir: Path) -> None:
    (demo_data_dir / "demo-keys.json").unlink()
    runner.invoke(app, ["demo", "--data-dir", str(demo_data_dir), "--no-serve"])
    (demo_data_dir / "demo-keys.json").unlink()
    runner.invoke(app, ["demo", "--data-dir", str(demo_data_dir), "--no-serve"])
    with sqlite3.connect(demo_data_dir / "state.db") as connection:
        connection.execute("DELETE FROM audit_event WHERE sequence = 2")
    broken = runner.invoke(app, ["audit", "verify", "--data-dir", str(demo_data_dir)])
    assert broken.exit_code == 1
    assert "sequence 2" in broken.output


def test_db_upgrade_creates_the_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATAPOORT_DATABASE_URL", raising=False)
    result = runner.invoke(app, ["db", "upgrade", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    with sqlite3.connect(tmp_path / "state.db") as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"principal", "api_key", "casbin_rule", "grant", "purpose", "budget_spend", "audit_event"} <= tables


def test_data_dir_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATAPOORT_DATABASE_URL", raising=False)
    monkeypatch.setenv("DATAPOORT_DATA_DIR", str(tmp_path / "from-env"))
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    assert (tmp_path / "from-env" / "state.db").is_file()


@pytest.fixture
def running_gateway(demo_data_dir: Path) -> Iterator[str]:
    """The demo gateway served by uvicorn on a free loopback port, for the CLI client to talk to."""
    import socket
    import threading
    import time

    import uvicorn

    from gateway.http.app import create_app
    from gateway.settings import Settings

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = Settings(_env_file=None, data_dir=demo_data_dir, port=port)  # type: ignore[call-arg]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_query_prints_a_table_with_its_privacy(
    running_gateway: str, demo_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = json.loads((demo_data_dir / "demo-keys.json").read_text())
    monkeypatch.setenv("DATAPOORT_API_KEY", keys["analyst"])
    sql = "SELECT wijk, COUNT(*) AS n, AVG(income) AS gem FROM residents GROUP BY wijk"
    result = runner.invoke(app, ["query", "--url", running_gateway, "--purpose", "beleidsinformatie", "--sql", sql])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["wijk", "n", "gem"]
    assert sum(line.strip().startswith("WK9999") for line in lines) == 10
    assert "epsilon spent 0.5" in result.output
    assert "n: discrete_laplace, ±" in result.output


def test_query_groups_by_a_column_without_public_keys(
    running_gateway: str, demo_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = json.loads((demo_data_dir / "demo-keys.json").read_text())
    monkeypatch.setenv("DATAPOORT_API_KEY", keys["analyst"])
    sql = "SELECT birth_year, COUNT(*) FROM residents GROUP BY birth_year"
    base = ["query", "--url", running_gateway, "--purpose", "beleidsinformatie", "--sql", sql, "--delta", "1e-8"]
    estimate = runner.invoke(app, [*base, "--estimate"])
    assert estimate.exit_code == 0, estimate.output
    assert "groups: threshold" in estimate.output
    result = runner.invoke(app, [*base, "--epsilon", "1"])
    assert result.exit_code == 0, result.output
    assert "groups: laplace_threshold at threshold" in result.output
    assert ", delta " in result.output


def test_query_estimates_and_reports_refusals(
    running_gateway: str, demo_data_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    keys = json.loads((demo_data_dir / "demo-keys.json").read_text())
    monkeypatch.setenv("DATAPOORT_API_KEY", keys["analyst"])
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"dataset": "residents", "aggregates": [{"function": "count"}]}))
    base = ["query", "--url", running_gateway, "--purpose", "beleidsinformatie"]
    estimate = runner.invoke(app, [*base, "--plan", str(plan), "--accuracy", "20", "--estimate"])
    assert estimate.exit_code == 0, estimate.output
    assert "affordable: True" in estimate.output
    as_json = runner.invoke(app, [*base, "--plan", str(plan), "--json"])
    assert json.loads(as_json.output)["columns"] == ["count"]
    refused = runner.invoke(app, [*base, "--sql", "SELECT * FROM residents"])
    assert refused.exit_code == 1
    assert json.loads(refused.output)["error"] == "query_not_supported"
    monkeypatch.setenv("DATAPOORT_API_KEY", keys["partner"])
    denied = runner.invoke(app, [*base, "--sql", "SELECT COUNT(*) FROM residents"])
    assert denied.exit_code == 1
    assert json.loads(denied.output)["error"] == "policy_denied"


def test_query_needs_a_key_and_one_question(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATAPOORT_API_KEY", raising=False)
    assert runner.invoke(app, ["query", "--purpose", "p", "--sql", "SELECT 1"]).exit_code == 2
    monkeypatch.setenv("DATAPOORT_API_KEY", "dpk_x")
    assert runner.invoke(app, ["query", "--purpose", "p"]).exit_code == 2
    unreachable = runner.invoke(app, ["query", "--purpose", "p", "--sql", "SELECT 1", "--url", "http://127.0.0.1:9"])
    assert unreachable.exit_code == 3


def test_the_demo_signs_checkpoints_and_verify_checks_them_with_the_public_key(demo_data_dir: Path) -> None:
    assert stat.S_IMODE((demo_data_dir / "audit-signing-key.pem").stat().st_mode) == 0o600
    public = demo_data_dir / "audit-signing-key.pub.pem"
    result = runner.invoke(app, ["audit", "verify", "--data-dir", str(demo_data_dir), "--public-key", str(public)])
    assert result.exit_code == 0, result.output
    assert "signed checkpoints, the latest at #1" in result.output
    # Cut the log short: only the signed checkpoint can tell.
    with sqlite3.connect(demo_data_dir / "state.db") as connection:
        connection.execute("DELETE FROM audit_event")
    result = runner.invoke(app, ["audit", "verify", "--data-dir", str(demo_data_dir), "--public-key", str(public)])
    assert result.exit_code == 1
    assert "BROKEN at sequence 1" in result.output


def test_keygen_writes_a_private_key_once(tmp_path: Path) -> None:
    result = runner.invoke(app, ["audit", "keygen", "--out-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE((tmp_path / "audit-signing-key.pem").stat().st_mode) == 0o600
    again = runner.invoke(app, ["audit", "keygen", "--out-dir", str(tmp_path)])
    assert again.exit_code == 1


def test_audit_prune_removes_old_events_and_records_itself(demo_data_dir: Path) -> None:
    public = demo_data_dir / "audit-signing-key.pub.pem"
    result = runner.invoke(app, ["audit", "prune", "--data-dir", str(demo_data_dir), "--before", "2099-01-01T00:00Z"])
    assert result.exit_code == 0, result.output
    assert "removed 1 events" in result.output
    with sqlite3.connect(demo_data_dir / "state.db") as connection:
        actions = [row[0] for row in connection.execute("SELECT action FROM audit_event ORDER BY sequence")]
    assert actions == ["audit:prune"]
    verify = runner.invoke(app, ["audit", "verify", "--data-dir", str(demo_data_dir), "--public-key", str(public)])
    assert verify.exit_code == 0, verify.output


def test_the_partner_pulls_an_extract_and_the_privacy_officer_traces_it(
    running_gateway: str, demo_data_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import sqlite3

    import pyarrow.parquet as pq

    with sqlite3.connect(demo_data_dir / "state.db") as connection:  # this small gemeente cannot meet k = 10
        connection.execute("UPDATE \"grant\" SET k_anonymity = 2 WHERE action = 'export'")
    keys = json.loads((demo_data_dir / "demo-keys.json").read_text())
    output = tmp_path / "jeugdzorg.csv"
    columns = [part for name in ("person_id", "wijk", "start_date", "zorgvorm") for part in ("--column", name)]
    base = ["--url", running_gateway, "--key", keys["partner"]]
    result = runner.invoke(
        app, ["extract", *base, "--dataset", "jeugdzorg", "--purpose", "jeugdhulp-evaluatie", *columns, "--output",
              str(output)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "k = 2" in result.output
    assert "start_date:year" in result.output
    import csv

    rows = list(csv.reader(output.read_text().splitlines()))
    assert rows[0] == ["person_id_pseudonym", "wijk", "start_date", "zorgvorm"]
    pseudonym = rows[1][0]

    officer = ["--url", running_gateway, "--key", keys["privacy_officer"]]
    traced = runner.invoke(
        app, ["reidentify", pseudonym, *officer, "--dataset", "jeugdzorg", "--justification", "Calamiteit 2026-7: "
              "de jeugdhulpverlener moet de client kunnen benaderen"],
    )  # fmt: skip
    assert traced.exit_code == 0, traced.output
    person = traced.output.split(" = ")[1].split()[0]
    residents = pq.read_table(demo_data_dir / "residents.parquet", columns=["person_id", "bsn"]).to_pylist()
    bsn = next(row["bsn"] for row in residents if row["person_id"] == person)
    found = runner.invoke(app, ["inzage", *officer, "--bsn", str(bsn)])
    assert found.exit_code == 0, found.output
    assert json.loads(found.output)["extracts"][0]["dataset"] == "jeugdzorg"

    refused = runner.invoke(
        app, ["reidentify", pseudonym, *base, "--dataset", "jeugdzorg", "--justification", "x" * 30]
    )
    assert refused.exit_code == 1
    assert "policy_denied" in refused.output


def test_serve_refuses_to_start_without_an_audit_signing_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.cli import serve as serve_module

    monkeypatch.delenv("DATAPOORT_AUDIT_SIGNING_KEY_PATH", raising=False)
    monkeypatch.delenv("DATAPOORT_DATABASE_URL", raising=False)
    served: list[object] = []
    monkeypatch.setattr(serve_module, "_serve", served.append)
    refused = runner.invoke(app, ["serve", "--data-dir", str(tmp_path)])
    assert refused.exit_code == 2
    assert "no audit signing key" in refused.output
    assert served == []
    allowed = runner.invoke(app, ["serve", "--data-dir", str(tmp_path), "--no-signing"])
    assert allowed.exit_code == 0, allowed.output
    assert "WITHOUT an audit signing key" in allowed.output
    assert len(served) == 1
    assert runner.invoke(app, ["audit", "keygen", "--out-dir", str(tmp_path)]).exit_code == 0
    signed = runner.invoke(app, ["serve", "--data-dir", str(tmp_path)])
    assert signed.exit_code == 0, signed.output
    assert len(served) == 2
