"""The privacy officer's view of the log: filtered pages with a stable cursor, streamed exports, budget use
and refusals; only with the oversight grant, and every reading itself audited."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest

from tests.gateway.conftest import DEMO_SQL, Api


def _fg(api: Api, path: str, key: str = "privacy_officer") -> Any:
    return api.client.get(path, headers={"Authorization": f"Bearer {api.keys[key]}"})


@pytest.fixture
def busy(api: Api) -> Api:
    """Three answered queries by the analyst and two refusals (one partner, one bad query)."""
    for epsilon in (0.1, 0.2, 0.3):
        assert (
            api.query(
                api.keys["analyst"], {"purpose": "beleidsinformatie", "sql": DEMO_SQL, "epsilon": epsilon}
            ).status_code
            == 200
        )
    assert api.query(api.keys["partner"], {"purpose": "beleidsinformatie", "sql": DEMO_SQL}).status_code == 403
    assert (
        api.query(api.keys["analyst"], {"purpose": "beleidsinformatie", "sql": "SELECT * FROM residents"}).status_code
        == 400
    )
    return api


def test_events_are_filtered_and_paged_with_a_cursor(busy: Api) -> None:
    first = _fg(busy, "/v1/audit/events?action=aggregate&decision=allow&limit=2")
    assert first.status_code == 200, first.text
    body = first.json()
    assert [e["privacy_cost"] for e in body["events"]] == [0.1, 0.2]
    assert all(e["principal_id"] == "analist-sociaal-domein" for e in body["events"])
    second = _fg(busy, f"/v1/audit/events?action=aggregate&decision=allow&limit=2&after={body['next']}").json()
    assert [e["privacy_cost"] for e in second["events"]] == [0.3]
    assert second["next"] is None
    denied = _fg(busy, "/v1/audit/events?decision=deny&organisation=zorgaanbieder-de-brug").json()["events"]
    assert [e["reason"] for e in denied] == ["policy_denied"]
    reading = busy.events()[-1]
    assert (reading.action, reading.principal_id) == ("audit:read", "fg-voorbeeldstad")
    assert "zorgaanbieder-de-brug" in (reading.query or "")


def test_time_ranges_select_by_when(busy: Api) -> None:
    events = _fg(busy, "/v1/audit/events?limit=1000").json()["events"]
    third = events[2]["occurred_at"]
    later = _fg(busy, f"/v1/audit/events?since={third}&limit=1000").json()["events"]
    assert later[0]["sequence"] == events[2]["sequence"]
    assert _fg(busy, "/v1/audit/events?since=2026-01-01T00:00").status_code == 422  # a time needs its zone


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_the_selection_exports_whole_and_streamed(busy: Api, fmt: str) -> None:
    response = _fg(busy, f"/v1/audit/events/export?format={fmt}&action=aggregate")
    assert response.status_code == 200
    if fmt == "jsonl":
        records = [json.loads(line) for line in response.text.splitlines()]
    else:
        records = list(csv.DictReader(io.StringIO(response.text)))
    assert len(records) == 5  # three answers and two refusals
    assert {r["decision"] for r in records} == {"allow", "deny"}
    assert all(len(r["hash"]) == 64 for r in records)
    assert busy.events()[-1].action == "audit:export"  # recorded before the stream began


def test_budget_use_per_principal_dataset_and_period(busy: Api) -> None:
    rows = _fg(busy, "/v1/audit/budget").json()["budget_use"]
    assert len(rows) == 1
    assert rows[0]["principal_id"] == "analist-sociaal-domein"
    assert rows[0]["dataset"] == "residents"
    assert rows[0]["epsilon"] == pytest.approx(0.6)
    assert rows[0]["queries"] == 3


def test_a_summary_of_refusals(busy: Api) -> None:
    summary = _fg(busy, "/v1/audit/denials").json()["denials"]
    reasons = {(row["reason"], row["principal_id"]): row["count"] for row in summary}
    assert reasons[("policy_denied", "zorgpartner-de-brug")] == 1
    assert reasons[("query_not_supported", "analist-sociaal-domein")] == 1


@pytest.mark.parametrize(
    "path", ["/v1/audit/events", "/v1/audit/events/export", "/v1/audit/budget", "/v1/audit/denials"]
)
def test_only_oversight_reads_the_log(api: Api, path: str) -> None:
    response = _fg(api, path, key="analyst")
    assert response.status_code == 403
    assert api.events()[-1].decision == "deny"


def test_events_carry_the_callers_span_and_the_processing_activity(api: Api) -> None:
    trace, caller = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    response = api.query(
        api.keys["analyst"],
        {"purpose": "beleidsinformatie", "sql": DEMO_SQL, "epsilon": 0.1},
        traceparent=f"00-{trace}-{caller}-01",
    )
    assert response.status_code == 200
    event = api.events()[-1]
    assert event.parent_span_id == caller
    assert event.traceparent is not None
    assert event.traceparent.split("-")[1] == trace
    assert event.traceparent.split("-")[2] != caller  # this request's own span
    assert event.processing_activity_id == "https://voorbeeldstad.example/verwerkingsregister/beleidsinformatie/v1"
    assert event.canonical_version == 3


def test_an_export_in_the_shape_of_the_logboek_standard_leaves_the_user_out(busy: Api) -> None:
    response = _fg(busy, "/v1/audit/events/export?format=logboek&action=aggregate&decision=allow")
    assert response.status_code == 200
    records = [json.loads(line) for line in response.text.splitlines()]
    assert len(records) == 3
    first = records[0]
    assert len(first["trace_id"]) == 32
    assert len(first["span_id"]) == 16
    assert first["status"] == "Ok"
    assert first["name"] == "aggregate"
    assert first["start_time"] <= first["end_time"] < first["start_time"] + 60_000
    assert first["attributes"]["dpl.core.processing_activity_id"].endswith("/beleidsinformatie/v1")
    assert "analist" not in response.text  # no principal, organisation or roles in the processing log
