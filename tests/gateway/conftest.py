"""The gateway's HTTP fixture: a migrated state database, the demo principals, and a running app."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from audit.models import AuditEvent
from gateway.data.catalog import load_catalog
from gateway.data.ingestion import snapshot_datasets
from gateway.demo import setup
from gateway.http.app import create_app, snapshot_store
from gateway.keys.pseudonym_secrets import add_version
from gateway.settings import DEFAULT_PSEUDONYM_KEYS, DEFAULT_SNAPSHOT_SEED, Settings
from gateway.store.database import create_state_engine, session_factory
from gateway.store.migrate import upgrade
from policies.models import BudgetSpend

DEMO_SQL = "SELECT wijk, COUNT(*) FROM residents GROUP BY wijk"


@dataclass
class Api:
    client: TestClient
    keys: dict[str, str]
    settings: Settings
    demo_dir: Path

    def query(self, key: str | None, body: dict[str, Any], **headers: str) -> Any:
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return self.client.post("/v1/query", json=body, headers=headers)

    def events(self) -> list[AuditEvent]:
        with self.client.app.state.gateway.sessions() as session:  # type: ignore[attr-defined]
            return list(session.scalars(select(AuditEvent).order_by(AuditEvent.sequence)))

    def spends(self) -> int:
        with self.client.app.state.gateway.sessions() as session:  # type: ignore[attr-defined]
            return int(session.scalar(select(func.count()).select_from(BudgetSpend)) or 0)

    def spend_statuses(self) -> list[str]:
        with self.client.app.state.gateway.sessions() as session:  # type: ignore[attr-defined]
            return list(session.scalars(select(BudgetSpend.status).order_by(BudgetSpend.id)))

    def execute(self, sql: str) -> None:
        with self.client.app.state.gateway.sessions() as session:  # type: ignore[attr-defined]
            session.execute(text(sql))
            session.commit()

    def refuse_audit_inserts(self) -> None:
        """Make the state database refuse every new audit event, as a full disk or a revoked grant would."""
        if self.settings.state_database_url.startswith("sqlite"):
            self.execute(
                "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_event BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        else:
            self.execute(
                "CREATE FUNCTION refuse_audit() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$ "
                "LANGUAGE plpgsql"
            )
            self.execute(
                "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_event FOR EACH ROW EXECUTE FUNCTION refuse_audit()"
            )


def provision_state(url: str, directory: Path, instance: str) -> dict[str, str]:
    """A migrated state database at ``url`` with the demo principals; their keys (also in ``directory``)."""
    engine = create_state_engine(url)
    upgrade(engine)
    keys = setup.provision(session_factory(engine), directory, instance=instance)
    engine.dispose()
    return keys


@pytest.fixture(scope="session")
def demo_snapshots(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's verified snapshots and their seed, ingested once per test session: each ``api``
    gets a copy (so a test may break its own), and its start finds them current."""
    directory = tmp_path_factory.mktemp("demo-snapshots")
    settings = Settings(data_dir=directory, catalog=demo_dir / "catalog.yaml", _env_file=None)  # type: ignore[call-arg]
    store = snapshot_store(settings)
    for name in snapshot_datasets(load_catalog(settings.catalog_path)):
        store.ensure(name, load_catalog(settings.catalog_path).datasets[name])
    return directory


@pytest.fixture
def api(state_db_url: str, demo_dir: Path, demo_snapshots: Path, tmp_path: Path) -> Iterator[Api]:
    settings = Settings(
        data_dir=tmp_path, database_url=state_db_url, catalog=demo_dir / "catalog.yaml", instance="test"
    )
    shutil.copytree(demo_snapshots / "snapshots", settings.snapshot_dir)
    shutil.copy2(demo_snapshots / DEFAULT_SNAPSHOT_SEED, settings.snapshot_seed_file)
    keys = provision_state(state_db_url, tmp_path, "test")
    add_version(tmp_path / DEFAULT_PSEUDONYM_KEYS)  # the partner's extracts need a master secret
    with TestClient(create_app(settings)) as client:
        yield Api(client=client, keys=keys, settings=settings, demo_dir=demo_dir)


@pytest.fixture
def demo_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small demo data dir made by `datapoort demo --no-serve` (data, catalog, state, keys)."""
    from typer.testing import CliRunner

    from gateway.cli import app

    monkeypatch.delenv("DATAPOORT_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATAPOORT_CATALOG", raising=False)
    result = CliRunner().invoke(app, ["demo", "--data-dir", str(tmp_path), "--residents", "1200", "--no-serve"])
    assert result.exit_code == 0, result.output
    return tmp_path
