"""Over HTTP: queries read verified snapshots, a failure that says nothing about the data costs nothing,
and what an ingestion found reaches the audit log but never a querier."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from audit.models import AuditEvent
from gateway.cli import app as cli
from gateway.http.app import create_app
from gateway.settings import Settings
from gateway.store.database import create_state_engine, session_factory
from tests.gateway.conftest import DEMO_SQL, Api, provision_state

COUNT = {"purpose": "beleidsinformatie", "sql": DEMO_SQL, "epsilon": 0.25}
ESTIMATE_PATH = "/v1/query/estimate"


def test_a_missing_snapshot_is_refused_before_anything_is_spent(api: Api) -> None:
    """Before, a missing or unreadable file failed only after the reservation: epsilon was spent on an
    error that says nothing about the data, and the estimate called the query affordable."""
    snapshots = api.settings.snapshot_dir
    (snapshots / "residents.json").unlink()
    headers = {"Authorization": f"Bearer {api.keys['analyst']}"}
    for path in ("/v1/query", ESTIMATE_PATH):
        response = api.client.post(path, json=COUNT, headers=headers)
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "source_unavailable"
    assert api.spends() == 0
    refused = [event for event in api.events() if event.action in ("aggregate", "aggregate:estimate")]
    assert [(event.decision, event.privacy_cost) for event in refused] == [("error", None), ("error", None)]


def test_a_truncated_snapshot_is_refused_before_anything_is_spent(api: Api) -> None:
    manifest = json.loads((api.settings.snapshot_dir / "residents.json").read_text())
    with (api.settings.snapshot_dir / manifest["file"]).open("r+b") as handle:
        handle.truncate(100)
    response = api.query(api.keys["analyst"], COUNT)
    assert response.status_code == 503
    assert api.spends() == 0


@pytest.fixture(params=["intact", "residents_missing"])
def fresh_gateway(
    request: pytest.FixtureRequest, tmp_path: Path, demo_dir: Path
) -> Iterator[tuple[TestClient, dict[str, str], Settings]]:
    """A gateway started on a data dir without snapshots; in one variant its residents file is missing."""
    catalog = (demo_dir / "catalog.yaml").read_text()
    if request.param == "residents_missing":
        catalog = catalog.replace("residents.parquet", "verdwenen.parquet")
    (tmp_path / "catalog.yaml").write_text(catalog)
    for public in demo_dir.glob("*.txt"):
        (tmp_path / public.name).write_text(public.read_text())
    for data in demo_dir.glob("*.parquet"):
        os.symlink(data, tmp_path / data.name)
    settings = Settings(data_dir=tmp_path, catalog=tmp_path / "catalog.yaml", instance="test", _env_file=None)  # type: ignore[call-arg]
    keys = provision_state(settings.state_database_url, tmp_path, "test")
    with TestClient(create_app(settings)) as client:
        yield client, keys, settings


def _ingestions(client: TestClient) -> dict[str, AuditEvent]:
    with client.app.state.gateway.sessions() as session:  # type: ignore[attr-defined]
        events = session.scalars(select(AuditEvent).where(AuditEvent.action == "dataset:ingest"))
        return {event.dataset or "": event for event in events}


def test_the_gateway_ingests_at_start_and_audits_what_it_found(
    fresh_gateway: tuple[TestClient, dict[str, str], Settings],
) -> None:
    client, keys, settings = fresh_gateway
    ingestions = _ingestions(client)
    assert set(ingestions) == {"residents", "bijstand", "jeugdzorg", "wmo", "woninginbraak"}
    bijstand = ingestions["bijstand"]
    report = json.loads(bijstand.detail or "{}")
    assert (bijstand.decision, bijstand.reason, bijstand.principal_id) == ("allow", "ingested", "system:ingest")
    assert report["rows"] == report["rows_read"] > 0
    assert {"rows_rejected", "values_nulled", "units_bounded", "seconds"} <= set(report)
    assert stat.S_IMODE(os.stat(settings.snapshot_dir).st_mode) == 0o700
    # The querier sees none of it.
    listing = client.get("/v1/datasets/bijstand", headers={"Authorization": f"Bearer {keys['analyst']}"})
    assert listing.status_code == 200
    assert "rows_read" not in listing.text
    assert "units_bounded" not in listing.text
    if "verdwenen" not in settings.catalog_path.read_text():
        return
    # A file missing at start: its dataset is refused before anything is spent, the rest is served.
    assert (ingestions["residents"].decision, ingestions["residents"].reason) == ("error", "ingestion_failed")
    headers = {"Authorization": f"Bearer {keys['analyst']}"}
    refused = client.post("/v1/query", json=COUNT, headers=headers)
    assert refused.status_code == 503
    assert refused.json()["error"] == "source_unavailable"
    assert "verdwenen" not in refused.text  # no path, no file name: only that the dataset is not available
    fine = client.post(
        "/v1/query",
        json={"purpose": "beleidsinformatie", "sql": "SELECT wijk, COUNT(*) FROM bijstand GROUP BY wijk"},
        headers=headers,
    )
    assert fine.status_code == 200


def test_datasets_ingest_reports_and_audits(demo_data_dir: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(cli, ["datasets", "ingest", "--data-dir", str(demo_data_dir)])
    assert first.exit_code == 0, first.output
    assert "residents: {" in first.output
    again = runner.invoke(cli, ["datasets", "ingest", "residents", "--data-dir", str(demo_data_dir)])
    assert again.exit_code == 0, again.output
    assert "residents: snapshot is current" in again.output
    unknown = runner.invoke(cli, ["datasets", "ingest", "nope", "--data-dir", str(demo_data_dir)])
    assert unknown.exit_code == 2
    engine = create_state_engine(f"sqlite:///{demo_data_dir / 'state.db'}")
    with session_factory(engine)() as session:
        actors = set(session.scalars(select(AuditEvent.principal_id).where(AuditEvent.action == "dataset:ingest")))
    engine.dispose()
    assert any(actor.startswith("system:cli:") for actor in actors)
