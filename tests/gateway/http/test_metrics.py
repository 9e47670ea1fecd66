"""Prometheus metrics: for the operator's token only, labelled by route template, counting what the
audit log records (requests, epsilon per dataset, appends, the chain's head), and the same registry on
a separate bind address."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from gateway.http.admission import OverloadLedger
from gateway.http.app import create_app
from gateway.http.metrics import OTHER_ROUTE, Metrics, set_catalog
from gateway.keys.pseudonym_secrets import add_version
from gateway.settings import DEFAULT_PSEUDONYM_KEYS, DEFAULT_SNAPSHOT_SEED, Settings
from tests.gateway.conftest import DEMO_SQL, Api, provision_state

TOKEN = "metrics-token-for-the-scraper"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def metered(state_db_url: str, demo_dir: Path, demo_snapshots: Path, tmp_path: Path) -> Iterator[Api]:
    """The ``api`` fixture's gateway, with a metrics token file and a metrics bind address."""
    token_file = tmp_path / "metrics-token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    os.chmod(token_file, 0o600)
    settings = Settings(
        data_dir=tmp_path,
        database_url=state_db_url,
        catalog=demo_dir / "catalog.yaml",
        instance="test",
        metrics_token_path=token_file,
        metrics_bind=f"127.0.0.1:{_free_port()}",
        _env_file=None,  # type: ignore[call-arg]
    )
    shutil.copytree(demo_snapshots / "snapshots", settings.snapshot_dir)
    shutil.copy2(demo_snapshots / DEFAULT_SNAPSHOT_SEED, settings.snapshot_seed_file)
    keys = provision_state(state_db_url, tmp_path, "test")
    add_version(tmp_path / DEFAULT_PSEUDONYM_KEYS)
    with TestClient(create_app(settings)) as client:
        yield Api(client=client, keys=keys, settings=settings, demo_dir=demo_dir)


def _samples(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _scrape(api: Api) -> Samples:
    response = api.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return _samples(response.text)


def test_metrics_need_the_operators_token(metered: Api) -> None:
    assert metered.client.get("/metrics").status_code == 401
    wrong = metered.client.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"] == "Bearer"
    assert wrong.json()["error"] == "authentication_failed"
    analyst = metered.client.get("/metrics", headers={"Authorization": f"Bearer {metered.keys['analyst']}"})
    assert analyst.status_code == 401  # an API key is not the operator's token


def test_without_a_token_file_there_are_no_metrics_on_the_main_port(api: Api) -> None:
    assert api.client.get("/metrics").status_code == 404
    assert api.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404


def test_a_query_is_counted_by_route_its_epsilon_by_dataset_and_its_event_by_the_chain(metered: Api) -> None:
    answer = metered.query(metered.keys["analyst"], {"purpose": "beleidsinformatie", "sql": DEMO_SQL, "epsilon": 0.3})
    assert answer.status_code == 200, answer.text
    metered.client.get("/v1/datasets/residents", headers={"Authorization": f"Bearer {metered.keys['analyst']}"})
    metered.client.get("/no/such/path/12345678")
    samples = _scrape(metered)

    assert samples[("datapoort_requests_total", (("route", "/v1/query"), ("status", "200")))] >= 1
    assert samples[("datapoort_request_duration_seconds_count", (("route", "/v1/query"),))] >= 1
    assert ("datapoort_requests_total", (("route", "/v1/datasets/{name}"), ("status", "200"))) in samples
    assert samples[("datapoort_requests_total", (("route", OTHER_ROUTE), ("status", "404")))] == 1
    routes = {dict(labels)["route"] for (_, labels) in samples if dict(labels).get("route") is not None}
    assert not any("residents" in route or "12345678" in route for route in routes), routes

    epsilon = answer.json()["privacy"]["epsilon_spent"]
    assert epsilon == pytest.approx(0.3)
    assert samples[("datapoort_epsilon_spent_total", (("dataset", "residents"),))] == pytest.approx(epsilon)
    assert samples[("datapoort_audit_append_duration_seconds_count", ())] >= 1
    assert samples[("datapoort_audit_chain_head_sequence", ())] == metered.events()[-1].sequence


def test_a_refusal_spends_nothing_but_is_counted(metered: Api) -> None:
    refused = metered.query(metered.keys["partner"], {"purpose": "beleidsinformatie", "sql": DEMO_SQL})
    assert refused.status_code == 403
    samples = _scrape(metered)
    assert samples[("datapoort_requests_total", (("route", "/v1/query"), ("status", "403")))] == 1
    assert not any(name == "datapoort_epsilon_spent_total" for name, _ in samples)
    assert samples[("datapoort_audit_chain_head_sequence", ())] == metered.events()[-1].sequence


def test_a_request_refused_before_routing_counts_under_its_route(metered: Api) -> None:
    too_big = metered.client.post(
        "/v1/query", content=b"x" * (metered.settings.max_body_bytes + 1), headers={"Content-Type": "application/json"}
    )
    assert too_big.status_code == 413
    samples = _scrape(metered)
    assert samples[("datapoort_requests_total", (("route", "/v1/query"), ("status", "413")))] == 1


def test_the_separate_bind_address_serves_the_same_registry_without_a_token(metered: Api) -> None:
    answer = metered.query(metered.keys["analyst"], {"purpose": "beleidsinformatie", "sql": DEMO_SQL})
    assert answer.status_code == 200, answer.text
    bind = metered.settings.metrics_bind
    assert bind is not None
    scraped = httpx.get(f"http://{bind}/metrics", timeout=10)
    assert scraped.status_code == 200
    samples = _samples(scraped.text)
    assert samples[("datapoort_requests_total", (("route", "/v1/query"), ("status", "200")))] == 1
    assert samples[("datapoort_audit_chain_head_sequence", ())] == metered.events()[-1].sequence


def test_the_bind_address_is_closed_at_shutdown(tmp_path: Path, demo_dir: Path) -> None:
    port = _free_port()
    settings = Settings(
        data_dir=tmp_path,
        catalog=demo_dir / "catalog.yaml",
        metrics_bind=f"127.0.0.1:{port}",
        _env_file=None,  # type: ignore[call-arg]
    )
    provision_state(settings.state_database_url, tmp_path, "test")
    with TestClient(create_app(settings)):
        assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_overload_refusals_and_the_catalog_are_counted() -> None:
    metrics = Metrics()
    ledger = OverloadLedger(on_refusal=metrics.overload_refused)
    ledger.record("a" * 32, "/v1/query", None)
    ledger.record("b" * 32, "/v1/query", None)
    set_catalog(metrics, 7, 12)
    samples = _samples(metrics.exposition().decode())
    assert samples[("datapoort_overload_refusals_total", ())] == 2
    assert samples[("datapoort_catalog_version", ())] == 7
    assert samples[("datapoort_catalog_datasets", ())] == 12


def test_each_app_has_a_registry_of_its_own() -> None:
    first, second = Metrics(), Metrics()
    first.overload_refused()
    assert _samples(second.exposition().decode())[("datapoort_overload_refusals_total", ())] == 0


def test_the_token_file_must_be_private(tmp_path: Path) -> None:
    token_file = tmp_path / "metrics-token"
    token_file.write_text(TOKEN, encoding="utf-8")
    os.chmod(token_file, 0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        Settings(data_dir=tmp_path, metrics_token_path=token_file, _env_file=None)  # type: ignore[call-arg]
