"""The whole path through the HTTP API, on SQLite and PostgreSQL state databases."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import duckdb
import pytest

from audit.verification import verify_chain
from gateway.exceptions import SourceUnavailable
from gateway.store.database import create_state_engine, session_factory
from tests.gateway.conftest import DEMO_SQL, Api


def _exact_counts(demo_dir: Path) -> dict[str, int]:
    rows = duckdb.sql(f"SELECT wijk, COUNT(*) FROM read_parquet('{demo_dir / 'residents.parquet'}') GROUP BY wijk")
    return dict(rows.fetchall())


def test_the_analyst_gets_a_dp_count_per_wijk(api: Api) -> None:
    response = api.query(api.keys["analyst"], {"purpose": "beleidsinformatie", "sql": DEMO_SQL})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["columns"] == ["wijk", "count"]
    exact = _exact_counts(api.demo_dir)
    released = dict(body["rows"])
    assert set(released) == set(exact)  # exactly the public wijk keys
    assert all(abs(released[wijk] - exact[wijk]) <= 40 for wijk in exact)  # scale 2: |noise| > 40 is ~1e-9
    assert released != exact  # noise was added (all ten exact by chance: < 1e-6)
    privacy = body["privacy"]
    assert privacy["epsilon_spent"] == pytest.approx(0.5)
    assert privacy["aggregates"]["count"]["mechanism"] == "discrete_laplace"
    assert privacy["aggregates"]["count"]["scale"] == pytest.approx(2.0)
    assert privacy["budget"]["epsilon_remaining"] == pytest.approx(9.5)
    assert response.headers["X-Request-ID"] == body["request_id"]


def test_an_allowed_query_is_audited_with_the_digest_of_what_was_sent(api: Api) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = api.query(
        api.keys["analyst"],
        {"purpose": "beleidsinformatie", "sql": DEMO_SQL, "epsilon": 0.25},
        traceparent=f"00-{trace_id}-00f067aa0ba902b7-01",
    )
    assert response.status_code == 200
    assert response.headers["traceparent"].split("-")[1] == trace_id
    event = api.events()[-1]
    assert event.decision == "allow"
    assert event.principal_id == "analist-sociaal-domein"
    assert event.organisation == "sociaal-domein"
    assert event.roles == "analist"
    assert (event.action, event.dataset, event.purpose, event.legal_basis) == (
        "aggregate",
        "residents",
        "beleidsinformatie",
        "public_task",
    )
    assert event.privacy_cost == pytest.approx(0.25)
    assert event.rows_released == 10
    assert event.response_digest == hashlib.sha256(response.content).hexdigest()
    assert event.request_id == response.json()["request_id"]
    assert event.traceparent is not None
    assert event.traceparent.split("-")[1] == trace_id
    assert event.query == "SELECT wijk, COUNT(*) AS count FROM residents GROUP BY wijk"


def test_the_partner_without_a_grant_gets_403_and_it_is_audited(api: Api) -> None:
    response = api.query(api.keys["partner"], {"purpose": "beleidsinformatie", "sql": DEMO_SQL})
    assert response.status_code == 403
    assert response.json()["error"] == "policy_denied"
    assert "beleidsinformatie" in response.json()["detail"]
    event = api.events()[-1]
    assert (event.decision, event.reason, event.principal_id) == ("deny", "policy_denied", "zorgpartner-de-brug")
    assert event.privacy_cost is None
    assert api.spends() == 0


@pytest.mark.parametrize(
    ("authorization", "detail"),
    [(None, "send an API key"), ("Bearer dpk_unknown", "well-formed"), ("Basic abc", "send an API key")],
)
def test_without_a_valid_key_401(api: Api, authorization: str | None, detail: str) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = api.client.post("/v1/query", json={"purpose": "beleidsinformatie", "sql": DEMO_SQL}, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["error"] == "authentication_failed"
    assert detail in response.json()["detail"]
    event = api.events()[-1]
    assert (event.decision, event.reason, event.principal_id) == ("deny", "authentication_failed", None)
    assert event.action == "aggregate"


def test_a_well_formed_but_unknown_key_is_401(api: Api) -> None:
    from policies.api_keys import generate_key

    response = api.query(generate_key().token, {"purpose": "beleidsinformatie", "sql": DEMO_SQL})
    assert response.status_code == 401
    assert response.json()["detail"] == "the API key is not valid"


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"purpose": "beleidsinformatie", "sql": "SELECT * FROM residents"}, 400, "query_not_supported"),
        (
            {"purpose": "beleidsinformatie", "sql": "SELECT nope, COUNT(*) FROM residents GROUP BY nope"},
            400,
            "unknown_column",
        ),
        ({"purpose": "beleidsinformatie", "sql": "SELECT COUNT(*) FROM nowhere"}, 400, "unknown_dataset"),
        ({"purpose": "beleidsinformatie", "sql": "SELECT COUNT(* FROM residents"}, 400, "invalid_query"),
        (
            {"purpose": "beleidsinformatie", "sql": "SELECT COUNT(*) FROM residents WHERE birth_year = 'x'"},
            400,
            "invalid_query",
        ),
        ({"purpose": "beleidsinformatie", "sql": DEMO_SQL, "epsilon": 50}, 400, "invalid_query"),
        ({"purpose": "beleidsinformatie", "sql": DEMO_SQL, "epsilon": -1}, 422, "invalid_request"),
        ({"purpose": "beleidsinformatie"}, 422, "invalid_request"),
        ({"purpose": "beleidsinformatie", "sql": DEMO_SQL, "extra": 1}, 422, "invalid_request"),
        ({"purpose": "marketing", "sql": DEMO_SQL}, 403, "policy_denied"),
    ],
)
def test_bad_input_gets_a_4xx_with_a_reason_and_spends_nothing(
    api: Api, body: dict[str, Any], status: int, error: str
) -> None:
    response = api.query(api.keys["analyst"], body)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert response.json()["detail"]
    assert "rows" not in response.json()
    assert api.events()[-1].reason == error
    assert api.spends() == 0


def test_a_malformed_json_body_is_422(api: Api) -> None:
    response = api.client.post(
        "/v1/query",
        content=b"{not json",
        headers={"Authorization": f"Bearer {api.keys['analyst']}", "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"


def test_the_budget_runs_out_with_429_and_the_remaining_budget(api: Api) -> None:
    for _ in range(5):
        assert (
            api.query(api.keys["analyst"], {"purpose": "beleidsinformatie", "sql": DEMO_SQL, "epsilon": 2}).status_code
            == 200
        )
    response = api.query(api.keys["analyst"], {"purpose": "beleidsinformatie", "sql": DEMO_SQL, "epsilon": 0.5})
    assert response.status_code == 429
    assert response.json()["error"] == "budget_exhausted"
    assert response.json()["epsilon_remaining"] == pytest.approx(0.0)
    assert response.json()["epsilon_requested"] == pytest.approx(0.5)
    assert api.spends() == 5


def test_every_request_lands_in_one_verifying_chain(api: Api) -> None:
    api.query(api.keys["analyst"], {"purpose": "beleidsinformatie", "sql": DEMO_SQL})
    api.query(api.keys["partner"], {"purpose": "beleidsinformatie", "sql": DEMO_SQL})
    api.query("dpk_x", {"purpose": "beleidsinformatie", "sql": DEMO_SQL})
    events = api.events()
    assert [event.decision for event in events[-3:]] == ["allow", "deny", "deny"]
    with api.client.app.state.gateway.sessions() as session:  # type: ignore[attr-defined]
        result = verify_chain(session)
    assert result.ok
    assert result.events_checked == len(events)


def test_fail_closed_when_the_audit_event_cannot_be_written(api: Api) -> None:
    before = len(api.events())
    api.refuse_audit_inserts()
    response = api.query(api.keys["analyst"], {"purpose": "beleidsinformatie", "sql": DEMO_SQL})
    assert response.status_code == 503
    assert response.json()["error"] == "audit_unavailable"
    assert "rows" not in response.json()
    assert "WK" not in response.text  # not one group key, let alone a count
    # No answer left, so the reservation made before the read is handed back: nothing was spent.
    assert api.spends() == 0
    assert len(api.events()) == before


def test_refusals_also_fail_closed(api: Api) -> None:
    api.refuse_audit_inserts()
    response = api.query(api.keys["partner"], {"purpose": "beleidsinformatie", "sql": DEMO_SQL})
    assert response.status_code == 503
    assert response.json()["error"] == "audit_unavailable"


def test_a_source_failing_after_reading_is_charged_with_its_event(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """An error that happens once the data is read may depend on the data, so it costs the query's epsilon."""

    def broken(*args: object, **kwargs: object) -> list[tuple[Any, ...]]:
        raise SourceUnavailable("the data source could not answer this query")

    monkeypatch.setattr(api.client.app.state.gateway.sources, "run", broken)  # type: ignore[attr-defined]
    before = len(api.events())
    response = api.query(api.keys["analyst"], {"purpose": "beleidsinformatie", "sql": DEMO_SQL, "epsilon": 0.25})
    assert response.status_code == 503
    assert response.json()["error"] == "source_unavailable"
    assert "rows" not in response.json()
    assert api.spend_statuses() == ["failed"]
    events = api.events()
    assert len(events) == before + 1  # one event, not a second one from the error handler
    assert (events[-1].decision, events[-1].reason, events[-1].privacy_cost) == ("error", "source_unavailable", 0.25)


def test_a_data_dependent_error_oracle_is_closed(api: Api) -> None:
    """A bare text column as a boolean made DuckDB fail only on rows that reach it: an exact yes/no about
    one person. Such conditions are refused before the data is read, whatever the BSN."""
    bsn = duckdb.sql(f"SELECT bsn FROM read_parquet('{api.demo_dir / 'residents.parquet'}') LIMIT 1").fetchall()[0][0]
    answers = set()
    for candidate in (bsn, "000000000"):
        for condition in ("AND naam", "AND NOT pc6", "AND (naam)", "AND -naam"):
            sql = f"SELECT COUNT(*) FROM residents WHERE bsn = '{candidate}' {condition}"
            response = api.query(api.keys["analyst"], {"purpose": "beleidsinformatie", "sql": sql})
            answers.add((response.status_code, response.json()["error"]))
    assert answers == {(400, "query_not_supported")}
    assert api.spends() == 0


def test_a_policy_change_by_another_process_is_obeyed_within_two_seconds(api: Api) -> None:
    import time

    from policies import service as policy_service

    body = {"purpose": "beleidsinformatie", "sql": DEMO_SQL, "epsilon": 0.01}
    assert api.query(api.keys["analyst"], body).status_code == 200
    # Another process (here: another engine on the same database) adds a deny rule.
    other = create_state_engine(api.settings.state_database_url)
    with session_factory(other)() as session:
        policy_service.add_deny_rule(
            session,
            subject="principal:analist-sociaal-domein",
            domain="sociaal-domein",
            dataset="residents",
            action="aggregate",
            purpose="*",
        )
        session.commit()
    other.dispose()
    changed = time.monotonic()
    while (response := api.query(api.keys["analyst"], body)).status_code == 200:
        assert time.monotonic() - changed < 2.0, "the deny rule was not obeyed within 2 seconds"
        time.sleep(0.05)
    assert response.status_code == 403
    assert response.json()["error"] == "policy_denied"
    assert time.monotonic() - changed < 2.0


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"purpose": "beleidsinformatie", "sql": DEMO_SQL, "epsilon": True}, 422, "invalid_request"),
        ({"purpose": "beleidsinformatie", "sql": DEMO_SQL, "epsilon": "1"}, 422, "invalid_request"),
        ({"purpose": "beleidsinformatie", "sql": DEMO_SQL, "epsilon": 5e-324}, 400, "invalid_query"),
        ({"purpose": "beleidsinformatie", "sql": DEMO_SQL + " LIMIT " + "9" * 5000}, 400, "invalid_query"),
        (
            {"purpose": "beleidsinformatie", "sql": "SELECT COUNT(*) FROM residents WHERE income > " + "9" * 200},
            400,
            "invalid_query",
        ),
        (
            {"purpose": "beleidsinformatie", "sql": "SELECT COUNT(*) FROM residents WHERE birth_year > 1e400"},
            400,
            "invalid_query",
        ),
        (
            {"purpose": "beleidsinformatie", "sql": "SELECT COUNT(*) FROM residents GROUP BY ALL"},
            400,
            "query_not_supported",
        ),
        (
            {"purpose": "beleidsinformatie", "sql": "SELECT COUNT(*) FROM residents TABLESAMPLE (10 PERCENT)"},
            400,
            "query_not_supported",
        ),
    ],
)
def test_edge_inputs_get_a_4xx_never_a_5xx(api: Api, body: dict[str, Any], status: int, error: str) -> None:
    response = api.query(api.keys["analyst"], body)
    assert (response.status_code, response.json()["error"]) == (status, error)
    assert api.spends() == 0


def test_a_state_database_failure_is_a_503(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy.exc import OperationalError

    from policies import budget

    def broken(*args: object, **kwargs: object) -> None:
        raise OperationalError("UPDATE", {}, Exception("disk I/O error"))

    monkeypatch.setattr(budget, "settle", broken)
    response = api.query(api.keys["analyst"], {"purpose": "beleidsinformatie", "sql": DEMO_SQL})
    assert response.status_code == 503
    assert response.json()["error"] == "state_unavailable"
    assert "rows" not in response.json()
    assert api.events()[-1].reason == "state_unavailable"


def test_a_request_records_when_its_key_was_last_used(api: Api) -> None:
    from policies.api_keys import parse_key
    from policies.models import ApiKey

    api.query(api.keys["analyst"], {"purpose": "beleidsinformatie", "sql": DEMO_SQL})
    parsed = parse_key(api.keys["analyst"])
    assert parsed is not None
    request_time = api.events()[-1].occurred_at
    with api.client.app.state.gateway.sessions() as session:  # type: ignore[attr-defined]
        key = session.get(ApiKey, parsed.key_id)
        assert key is not None
        assert key.last_used_at == request_time


def test_health_and_docs(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok"}
    assert api.client.get("/docs").status_code == 200
    assert "/v1/query" in api.client.get("/openapi.json").json()["paths"]


def test_unknown_routes_are_a_json_404(api: Api) -> None:
    response = api.client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_answers_carry_security_headers_and_no_server_name(api: Api) -> None:
    response = api.query(api.keys["analyst"], {"purpose": "beleidsinformatie", "sql": DEMO_SQL, "epsilon": 0.1})
    assert response.status_code == 200
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-frame-options"] == "DENY"


def test_readiness_names_what_is_not_ready(api: Api) -> None:
    ready = api.client.get("/readyz")
    assert ready.status_code == 503  # the test gateway has no signing key
    assert set(ready.json()["problems"]) == {"audit_signing_key"}
    (api.settings.snapshot_dir / "wmo.json").unlink()
    assert set(api.client.get("/readyz").json()["problems"]) == {"audit_signing_key", "dataset:wmo"}


def test_a_reservation_that_stays_counted_is_the_cost_its_event_records(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the answer's event failed and the reservation could not be handed back either, the refusal's
    event said the request cost nothing while the ledger kept counting it."""
    from sqlalchemy.exc import OperationalError

    from audit.exceptions import AuditUnavailable
    from gateway.http.routers import query as query_routes
    from policies import budget

    def answer_not_audited(*args: object, **kwargs: object) -> None:
        raise AuditUnavailable("the audit event could not be committed")

    def refund_refused(*args: object, **kwargs: object) -> None:
        raise OperationalError("DELETE", {}, Exception("disk I/O error"))

    monkeypatch.setattr(query_routes, "respond", answer_not_audited)
    monkeypatch.setattr(budget, "cancel", refund_refused)
    response = api.query(api.keys["analyst"], {"purpose": "beleidsinformatie", "sql": DEMO_SQL, "epsilon": 0.25})
    assert response.status_code == 503
    assert api.spend_statuses() == ["reserved"]  # counted: it could not be handed back
    event = api.events()[-1]
    assert (event.decision, event.reason, event.privacy_cost) == ("error", "audit_unavailable", 0.25)
