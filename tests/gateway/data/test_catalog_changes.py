"""Datasets added, changed and removed without a restart: validated, ingested, audited with before and
after, and followed by a second gateway process (an app on the same state database and data dir) within
its poll interval; pseudonym key rotation is followed the same way."""

from __future__ import annotations

import csv
import gc
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from gateway.data.catalog import ColumnSpec
from gateway.http.app import create_app
from gateway.keys.pseudonym_secrets import add_version
from gateway.settings import DEFAULT_PSEUDONYM_KEYS
from tests.gateway.conftest import Api

WIJKEN = [f"WK9999{number:02d}" for number in range(10)]


def _survey(path: Path, *, score: str = "7") -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["person_id", "wijk", "score"])
        for number in range(400):
            writer.writerow([f"P{number:06d}", WIJKEN[number % 10], score if number == 3 else str(number % 11)])
    return path


def _entry(source: Path, **overrides: Any) -> dict[str, Any]:
    return {
        "description": "Eenzaamheidsmonitor (synthetisch)",
        "source": {"kind": "csv", "path": str(source)},
        "privacy_unit": "person_id",
        "unit_space": "person",
        "columns": {
            "person_id": {"type": "string", "kind": "identifier"},
            "wijk": {"type": "string", "kind": "quasi_identifier", "public_keys": WIJKEN},
            "score": {"type": "integer", "lower": 0, "upper": 10},
        },
        **overrides,
    }


def _as(api: Api, key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api.keys[key]}"}


@pytest.fixture
def other_process(api: Api) -> Iterator[TestClient]:
    """A second gateway on the same state database and data dir, started before any change, polling at
    every request (its interval is a setting; what is tested is that it follows without a restart)."""
    token = api.settings.data_dir / "metrics-token"
    token.write_text("scrape-me", encoding="utf-8")
    os.chmod(token, 0o600)
    settings = api.settings.model_copy(
        update={"policy_poll_seconds": 0.0, "instance": "other", "metrics_token_path": token}
    )
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def changer(api: Api, tmp_path: Path) -> Iterator[TestClient]:
    """A gateway whose operator lets datasets added while running read files under ``tmp_path``."""
    settings = api.settings.model_copy(update={"dataset_roots": [tmp_path], "instance": "changer"})
    with TestClient(create_app(settings)) as client:
        yield client


def _metric(client: TestClient, name: str) -> float:
    text = client.get("/metrics", headers={"Authorization": "Bearer scrape-me"}).text
    (line,) = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(line.split()[1])


def _grant(api: Api) -> None:
    body = {
        "subject": "role:analist",
        "organisation": "sociaal-domein",
        "dataset": "eenzaamheid",
        "action": "aggregate",
        "purpose": "beleidsinformatie",
        "legal_basis": "public_task",
        "legal_basis_text": "Wmo 2015 art. 2.1.1",
        "epsilon_per_period": 5,
        "budget_period": "month",
    }
    response = api.client.post("/v1/admin/grants", json=body, headers=_as(api, "admin"))
    assert response.status_code == 201, response.text


SQL = "SELECT wijk, COUNT(*) AS n, AVG(score) AS score FROM eenzaamheid GROUP BY wijk"


def test_a_dataset_added_updated_and_removed_is_live_in_every_process_without_a_restart(
    api: Api, changer: TestClient, other_process: TestClient, tmp_path: Path
) -> None:
    source = _survey(tmp_path / "eenzaamheid.csv")
    analyst = _as(api, "analyst")
    before = other_process.post("/v1/query", json={"sql": SQL, "purpose": "beleidsinformatie"}, headers=analyst)
    assert before.status_code == 400
    assert before.json()["error"] in ("unknown_dataset", "policy_denied")

    added = changer.post(
        "/v1/admin/datasets", json={"name": "eenzaamheid", "entry": _entry(source)}, headers=_as(api, "admin")
    )
    assert added.status_code == 201, added.text
    assert added.json()["before"] is None
    assert added.json()["after"]["columns"]["score"]["upper"] == 10
    _grant(api)

    datasets_before = _metric(other_process, "datapoort_catalog_datasets")
    answer = other_process.post("/v1/query", json={"sql": SQL, "purpose": "beleidsinformatie"}, headers=analyst)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["rows"]) == 10
    # The operator sees it in the other process's metrics, no restart: the version and one more dataset.
    assert _metric(other_process, "datapoort_catalog_version") >= 1
    assert _metric(other_process, "datapoort_catalog_datasets") == datasets_before + 1
    listed = other_process.get("/v1/admin/datasets", headers=_as(api, "admin")).json()
    assert "eenzaamheid" in {item["name"] for item in listed["datasets"]}
    assert listed["catalog_version"] >= 1

    narrower = _entry(
        source, columns={**_entry(source)["columns"], "score": {"type": "integer", "lower": 0, "upper": 5}}
    )
    updated = changer.put("/v1/admin/datasets/eenzaamheid", json={"entry": narrower}, headers=_as(api, "admin"))
    assert updated.status_code == 200, updated.text
    assert (
        updated.json()["before"]["columns"]["score"]["upper"],
        updated.json()["after"]["columns"]["score"]["upper"],
    ) == (10, 5)
    shown = other_process.get("/v1/datasets/eenzaamheid", headers=analyst)
    assert shown.status_code == 200
    assert "5" in json.dumps(shown.json())

    removed = changer.delete("/v1/admin/datasets/eenzaamheid", headers=_as(api, "admin"))
    assert removed.status_code == 200, removed.text
    gone = other_process.post("/v1/query", json={"sql": SQL, "purpose": "beleidsinformatie"}, headers=analyst)
    assert gone.status_code == 400
    assert gone.json()["error"] == "unknown_dataset"

    changes = [e for e in api.events() if (e.query or "").startswith("dataset.")]
    assert [e.query for e in changes] == [
        "dataset.add dataset:eenzaamheid",
        "dataset.update dataset:eenzaamheid",
        "dataset.remove dataset:eenzaamheid",
    ]
    assert all(e.principal_id == "beheerder-voorbeeldstad" and e.decision == "allow" for e in changes)
    detail = json.loads(changes[1].detail or "{}")
    assert detail["before"]["columns"]["score"]["upper"] == 10
    assert detail["after"]["columns"]["score"]["upper"] == 5
    ingested = [e for e in api.events() if e.dataset == "eenzaamheid" and e.reason == "ingested"]
    assert len(ingested) == 2  # the add and the update each ran the ingestion


def test_a_value_an_integer_column_would_round_refuses_the_change(
    api: Api, changer: TestClient, tmp_path: Path
) -> None:
    source = _survey(tmp_path / "eenzaamheid.csv", score="7.5")
    response = changer.post(
        "/v1/admin/datasets", json={"name": "eenzaamheid", "entry": _entry(source)}, headers=_as(api, "admin")
    )
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_dataset"
    assert "score (1 values)" in body["detail"]
    assert "7.5" not in body["detail"]
    listed = api.client.get("/v1/admin/datasets", headers=_as(api, "admin")).json()
    assert "eenzaamheid" not in {item["name"] for item in listed["datasets"]}
    exact = _survey(tmp_path / "exact.csv", score="7.0")  # the same number, written as a float: no loss
    accepted = changer.post(
        "/v1/admin/datasets", json={"name": "eenzaamheid", "entry": _entry(exact)}, headers=_as(api, "admin")
    )
    assert accepted.status_code == 201, accepted.text


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"privacy_unit": None}, 400, "invalid_dataset"),
        ({"unit_space": "elders"}, 400, "invalid_dataset"),
        ({"columns": {"person_id": {"type": "text"}}}, 400, "invalid_dataset"),
        ({"max_contributions": 0}, 400, "invalid_dataset"),
    ],
)
def test_an_invalid_entry_is_refused_with_its_reason(
    api: Api, changer: TestClient, tmp_path: Path, change: dict[str, Any], status: int, code: str
) -> None:
    entry = {
        key: value for key, value in {**_entry(_survey(tmp_path / "s.csv")), **change}.items() if value is not None
    }
    response = changer.post(
        "/v1/admin/datasets", json={"name": "eenzaamheid", "entry": entry}, headers=_as(api, "admin")
    )
    assert (response.status_code, response.json()["error"]) == (status, code), response.text


def test_only_an_administrator_changes_the_catalog_and_names_are_checked(
    api: Api, changer: TestClient, tmp_path: Path
) -> None:
    body = {"name": "eenzaamheid", "entry": _entry(_survey(tmp_path / "s.csv"))}
    assert changer.post("/v1/admin/datasets", json=body, headers=_as(api, "analyst")).status_code == 403
    assert changer.post("/v1/admin/datasets", json=body, headers=_as(api, "admin")).status_code == 201
    again = changer.post("/v1/admin/datasets", json=body, headers=_as(api, "admin"))
    assert (again.status_code, again.json()["error"]) == (409, "policy_conflict")
    missing = changer.put("/v1/admin/datasets/onbekend", json={"entry": body["entry"]}, headers=_as(api, "admin"))
    assert missing.status_code == 404
    bad_name = changer.delete("/v1/admin/datasets/Bad-Name", headers=_as(api, "admin"))
    assert bad_name.status_code == 422
    assert api.client.get("/v1/admin/datasets", headers=_as(api, "privacy_officer")).status_code == 200


def test_an_integer_columns_public_keys_may_be_numbers_and_are_kept_as_text() -> None:
    column = ColumnSpec.model_validate({"type": "integer", "public_keys": [0, 1, 2.0, "3"]})
    assert column.keys == ("0", "1", "2", "3")
    for keys, message in (
        ([True, False], "not true/false"),
        ([1, "1"], "duplicates"),
        ([2.5], "not a whole number"),
        ([float("inf")], "not a whole number"),
        ([2**63], "64-bit"),
    ):
        with pytest.raises(ValueError, match=message):
            ColumnSpec.model_validate({"type": "integer", "public_keys": keys})
    for kind in ("float", "string", "date"):  # their text form is the source's: numbers would not match it
        with pytest.raises(ValueError, match="as text"):
            ColumnSpec.model_validate({"type": kind, "public_keys": [1, 2]})


def test_the_operator_manages_datasets_from_the_host(
    demo_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.cli import app

    runner = CliRunner()
    survey = _survey(tmp_path / "eenzaamheid.csv")
    spec = tmp_path / "eenzaamheid.yaml"
    spec.write_text(json.dumps(_entry(Path("eenzaamheid.csv"))), encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # a path in the entry is relative to where the command runs
    assert survey.is_file()
    data_dir = ["--data-dir", str(demo_data_dir)]
    added = runner.invoke(app, ["datasets", "add", "eenzaamheid", "--spec", str(spec), *data_dir])
    assert added.exit_code == 0, added.output
    assert "dataset.add eenzaamheid" in added.output
    listed = runner.invoke(app, ["datasets", "list", *data_dir])
    assert "eenzaamheid  private  csv  unit person_id  3 columns" in listed.output
    ingest = runner.invoke(app, ["datasets", "ingest", "eenzaamheid", *data_dir])
    assert ingest.exit_code == 0, ingest.output
    assert "eenzaamheid: snapshot is current" in ingest.output
    twice = runner.invoke(app, ["datasets", "add", "eenzaamheid", "--spec", str(spec), *data_dir])
    assert twice.exit_code == 1
    assert "exists" in twice.output
    removed = runner.invoke(app, ["datasets", "remove", "eenzaamheid", *data_dir])
    assert removed.exit_code == 0, removed.output
    assert "eenzaamheid" not in runner.invoke(app, ["datasets", "list", *data_dir]).output


def test_a_rotated_pseudonym_key_is_used_without_a_restart(api: Api, other_process: TestClient) -> None:
    api.execute("UPDATE \"grant\" SET k_anonymity = 2 WHERE action = 'export'")
    body = {
        "dataset": "jeugdzorg",
        "purpose": "jeugdhulp-evaluatie",
        "columns": ["person_id", "wijk", "start_date", "zorgvorm"],
        "format": "csv",
    }
    first = other_process.post("/v1/extracts", json=body, headers=_as(api, "partner"))
    assert first.status_code == 200, first.text
    assert first.headers["x-datapoort-pseudonym-version"] == "1"
    assert add_version(api.settings.data_dir / DEFAULT_PSEUDONYM_KEYS) == 2  # `datapoort pseudonyms rotate`
    second = other_process.post("/v1/extracts", json=body, headers=_as(api, "partner"))
    assert second.status_code == 200, second.text
    assert second.headers["x-datapoort-pseudonym-version"] == "2"
    assert set(first.text.splitlines()[1:]).isdisjoint(second.text.splitlines()[1:])


def test_an_entry_cannot_make_the_gateway_read_what_is_not_a_dataset(
    api: Api, changer: TestClient, tmp_path: Path
) -> None:
    admin = _as(api, "admin")
    survey = _survey(tmp_path / "s.csv")
    outside = _survey(Path(api.settings.data_dir).parent / f"outside-{tmp_path.name}.csv")
    key_file = api.settings.data_dir / DEFAULT_PSEUDONYM_KEYS  # under the data dir, but the gateway's own
    binary = tmp_path / "keys.txt"
    binary.write_bytes(b"\xff\xfe\x00")

    def refused(entry: Any, headers: dict[str, str] = admin) -> tuple[int, str, str]:
        response = changer.post("/v1/admin/datasets", json={"name": "eenzaamheid", "entry": entry}, headers=headers)
        body = response.json()
        return response.status_code, body.get("error", ""), json.dumps(body.get("detail", ""))

    # Decided before anything is read: a caller without the grant learns nothing of the host's files.
    assert refused(_entry(Path("/dev/zero")), _as(api, "analyst"))[:2] == (403, "policy_denied")
    status, code, detail = refused(_entry(outside))
    assert (status, code) == (400, "invalid_dataset")
    assert "outside the dataset roots" in detail
    assert refused(_entry(Path(str(tmp_path) + "/\u0000x.csv")))[:2] == (400, "invalid_dataset")
    keys = _entry(survey)
    keys["columns"]["wijk"]["public_keys"] = {"file": str(key_file)}
    status, code, detail = refused(keys)
    assert (status, code) == (400, "invalid_dataset")
    assert "the gateway's own" in detail
    keys["columns"]["wijk"]["public_keys"] = {"file": str(binary)}
    status, code, detail = refused(keys)
    assert (status, code) == (400, "invalid_dataset")
    assert "cannot be read as text" in detail
    assert refused({**_entry(survey), "columns": ["person_id"]})[:2] == (400, "invalid_dataset")
    state_db = {
        **_entry(survey),
        "source": {"kind": "postgresql", "table": "api_key", "url_env": "DATAPOORT_DATABASE_URL"},
    }
    status, code, detail = refused(state_db)
    assert (status, code) == (400, "invalid_dataset")
    assert "url_env" in detail
    residents = next(
        spec
        for name, spec in api.client.app.state.gateway.catalog.datasets.items()
        if name == "residents"  # type: ignore[attr-defined]
    )
    public = {
        "kind": "public",
        "source": {"kind": residents.source.kind, "path": residents.source.path},
        "columns": {"wijk": {"type": "string"}},
    }
    status, code, detail = refused(public)
    assert (status, code) == (400, "invalid_dataset")
    assert "may not read private dataset 'residents'" in detail
    assert [e for e in api.events() if (e.query or "").startswith("dataset.")] == []


def test_two_changes_of_one_dataset_at_once_do_not_overwrite_each_other(api: Api, tmp_path: Path) -> None:
    from gateway.data import catalog_changes
    from gateway.data.catalog import load_catalog
    from gateway.store.database import read_snapshot
    from policies.exceptions import PolicyConflict

    settings = api.settings.model_copy(update={"dataset_roots": [tmp_path]})
    state = api.client.app.state.gateway  # type: ignore[attr-defined]
    file_catalog = load_catalog(settings.catalog_path)
    context = catalog_changes.CatalogContext(
        file_catalog=file_catalog,
        snapshots=state.sources.snapshots,
        sessions=state.sessions,
        actor="system:test",
        instance="test",
        guard=catalog_changes.guard_for(settings, file_catalog),
    )
    entry = _entry(_survey(tmp_path / "s.csv"))
    with state.sessions() as session:  # both prepared against the same state, before either is recorded
        read_snapshot(session)
        first = catalog_changes.prepare_change(session, context, "eenzaamheid", entry, expect="new")
        second = catalog_changes.prepare_change(session, context, "eenzaamheid", entry, expect="new")
    with state.sessions() as session:
        catalog_changes.record(session, first, actor="system:test", now=datetime.now(UTC))
        session.commit()
    with state.sessions() as session, pytest.raises(PolicyConflict, match="changed meanwhile"):
        catalog_changes.record(session, second, actor="system:test", now=datetime.now(UTC))


def test_a_start_whose_recorded_changes_no_longer_fit_the_catalog_file_is_refused(api: Api) -> None:
    """Serving the file alone would bring back a dataset removed through the API; the operator must
    reconcile the file and the changes first."""
    from gateway.exceptions import CatalogError
    from policies import catalog_changes as recorded

    broken = {"source": {"kind": "parquet", "path": "/nowhere.parquet"}, "privacy_unit": "x", "unit_space": "elders"}
    with api.client.app.state.gateway.sessions() as session:  # type: ignore[attr-defined]
        recorded.record(session, "verweesd", json.dumps(broken), based_on=0, actor="system:test", now=datetime.now(UTC))
        session.commit()
    with pytest.raises(CatalogError, match="do not fit together"), TestClient(create_app(api.settings)):
        pass
    gc.collect()  # a connection the refused start left open would be reported here, not in a later test
