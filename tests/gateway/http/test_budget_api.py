"""Budgets per privacy-unit space over HTTP: the demo's person datasets draw on one budget, and every
answer, refusal and view says so."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from policies import budget
from policies.models import BudgetSpend, Grant
from tests.gateway.conftest import DEMO_SQL, Api

PURPOSE = "beleidsinformatie"
PERSON_DATASETS = ["bijstand", "jeugdzorg", "residents", "wmo", "woninginbraak"]


def _as(api: Api, key: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    return api.client.request(method, path, json=body, headers={"Authorization": f"Bearer {api.keys[key]}"})


def _ask(api: Api, sql: str, epsilon: float) -> Any:
    return api.query(api.keys["analyst"], {"purpose": PURPOSE, "sql": sql, "epsilon": epsilon})


def _spend_ten(api: Api) -> None:
    """The analyst's whole month: 8 on residents and 2 on bijstand, each under its own grant of 10."""
    for _ in range(4):
        assert _ask(api, DEMO_SQL, 2).status_code == 200
    answer = _ask(api, "SELECT wijk, COUNT(*) FROM bijstand GROUP BY wijk", 2)
    assert answer.status_code == 200, answer.text
    budget_part = answer.json()["privacy"]["budget"]
    assert budget_part["unit_space"] == "person"
    assert budget_part["epsilon_remaining"] == pytest.approx(0.0)
    assert [cap["epsilon_remaining"] for cap in budget_part["caps"]] == pytest.approx([40.0, 190.0])


def test_five_grants_on_person_datasets_give_one_allowance_and_the_429_names_the_space(api: Api) -> None:
    _spend_ten(api)
    refused = _ask(api, "SELECT COUNT(*) FROM wmo", 0.5)
    assert refused.status_code == 429
    body = refused.json()
    assert body["detail"] == (
        "this query costs epsilon 0.5 but only 0 is left for you in unit space 'person' "
        "(datasets bijstand, residents, wmo) this month"
    )
    assert body["epsilon_remaining"] == pytest.approx(0.0)
    estimate = _as(api, "analyst", "POST", "/v1/query/estimate", {"purpose": PURPOSE, "sql": DEMO_SQL})
    assert estimate.json()["budget"] == {"unit_space": "person", "epsilon_remaining": 0.0, "affordable": False}
    assert api.spends() == 5


def test_the_budget_view_shows_the_space_its_visible_datasets_and_its_caps(api: Api) -> None:
    _spend_ten(api)
    budgets = _as(api, "analyst", "GET", "/v1/budget").json()["budgets"]
    read_at = api.events()[-1].occurred_at
    month, year = budget.period_of("month", read_at), budget.period_of("year", read_at)
    assert len(budgets) == 5  # one per grant, all drawing on the same spends
    for entry in budgets:
        assert (entry["unit_space"], entry["datasets"]) == ("person", PERSON_DATASETS)
        assert (entry["epsilon_per_period"], entry["epsilon_spent"], entry["epsilon_remaining"]) == pytest.approx(
            (10.0, 10.0, 0.0)
        )
        caps = [(cap["period"], cap["epsilon_per_period"], cap["epsilon_spent"]) for cap in entry["caps"]]
        assert caps == [(month, 50.0, 10.0), (year, 200.0, 10.0)]
    assert sorted(entry["dataset"] for entry in budgets) == PERSON_DATASETS
    # The partner sees only the dataset it may use, its own spends (none), and the space's caps.
    (partner,) = _as(api, "partner", "GET", "/v1/budget").json()["budgets"]
    assert (partner["unit_space"], partner["datasets"]) == ("person", ["jeugdzorg"])
    assert (partner["epsilon_spent"], partner["epsilon_remaining"]) == (0.0, 3.0)
    assert partner["caps"][0]["epsilon_spent"] == pytest.approx(10.0)
    datasets = _as(api, "analyst", "GET", "/v1/datasets").json()["datasets"]
    private = [d for d in datasets if d["kind"] == "private"]
    assert {(d["unit_space"], d["global_budget"]["epsilon_per_period"]) for d in private} == {("person", 50.0)}
    (public,) = [d for d in datasets if d["kind"] == "public"]
    assert (public["name"], public["unit_space"], public["global_budget"]) == ("kerncijfers", None, None)
    assert datasets[0]["longer_cap"] == {"epsilon_per_period": 200.0, "delta_per_period": 1e-5, "period": "year"}


def test_the_space_cap_is_shared_with_other_principals(api: Api) -> None:
    now = datetime.now(UTC)
    with api.client.app.state.gateway.sessions() as session:  # type: ignore[attr-defined]
        partner_grant = session.scalar(
            select(Grant.id).where(Grant.dataset == "jeugdzorg", Grant.action == "aggregate")
        )
        assert partner_grant is not None
        # What the partner has spent on another dataset of the space this month.
        session.add(
            BudgetSpend(
                principal_id="zorgpartner-de-brug",
                dataset="jeugdzorg",
                unit_space="person",
                grant_id=partner_grant,
                period=budget.period_of("month", now),
                epsilon=48.5,
                delta=0.0,
                status=budget.RELEASED,
                request_id="elsewhere",
                spent_at=now,
            )
        )
        session.flush()
        budget.rebuild_totals(session, ["person"])  # as if it had been spent through the ledger
        session.commit()
    refused = _ask(api, DEMO_SQL, 2)
    assert refused.status_code == 429
    assert refused.json()["detail"] == (
        "this query costs epsilon 2 but the unit space 'person' has only 1.5 left this month across all users"
    )
    assert refused.json()["epsilon_remaining"] == pytest.approx(1.5)
    assert _ask(api, DEMO_SQL, 1.5).status_code == 200


def test_a_revoked_and_reissued_grant_starts_from_what_was_spent(api: Api) -> None:
    _spend_ten(api)
    grants = _as(api, "admin", "GET", "/v1/admin/grants?organisation=sociaal-domein").json()["grants"]
    old = next(g for g in grants if g["dataset"] == "residents" and g["action"] == "aggregate")
    assert _as(api, "admin", "POST", f"/v1/admin/grants/{old['id']}/revoke").status_code == 200
    again = _as(
        api,
        "admin",
        "POST",
        "/v1/admin/grants",
        {
            "subject": "role:analist",
            "organisation": "sociaal-domein",
            "dataset": "residents",
            "action": "aggregate",
            "purpose": PURPOSE,
            "legal_basis": "public_task",
            "legal_basis_text": "Gemeentewet art. 160",
            "epsilon_per_period": 10.0,
            "budget_period": "month",
        },
    )
    assert again.status_code == 201, again.text
    refused = _ask(api, DEMO_SQL, 0.5)
    assert refused.status_code == 429
    assert "only 0 is left for you in unit space 'person'" in refused.json()["detail"]


def test_the_privacy_officer_sees_use_per_space_and_can_filter_on_it(api: Api) -> None:
    _spend_ten(api)
    rows = _as(api, "privacy_officer", "GET", "/v1/audit/budget?unit_space=person").json()["budget_use"]
    assert [(row["unit_space"], row["dataset"], row["epsilon"], row["queries"]) for row in rows] == [
        ("person", "bijstand", 2.0, 1),
        ("person", "residents", 8.0, 4),
    ]
    assert _as(api, "privacy_officer", "GET", "/v1/audit/budget?unit_space=residents").json()["budget_use"] == []
    assert "unit_space=person" in (api.events()[-2].query or "")


def test_every_grant_in_a_space_binds_whatever_its_period(api: Api) -> None:
    """A grant of 10 a month beside one of 3 a year allowed 3 + 10 a month: each grant was checked alone,
    over its own period, against the principal's spends."""
    yearly = _as(
        api,
        "admin",
        "POST",
        "/v1/admin/grants",
        {
            "subject": "role:analist",
            "organisation": "sociaal-domein",
            "dataset": "wmo",
            "action": "aggregate",
            "purpose": "jeugdhulp-evaluatie",
            "legal_basis": "public_task",
            "legal_basis_text": "Wmo 2015 art. 2.1.1",
            "epsilon_per_period": 3.0,
            "budget_period": "year",
        },
    )
    assert yearly.status_code == 201, yearly.text
    assert _ask(api, DEMO_SQL, 2).status_code == 200
    estimate = api.client.post(
        "/v1/query/estimate",
        json={"purpose": "beleidsinformatie", "sql": DEMO_SQL, "epsilon": 2},
        headers={"Authorization": f"Bearer {api.keys['analyst']}"},
    ).json()
    assert estimate["budget"]["affordable"] is False  # the estimate holds every grant to it, as the query does
    assert estimate["budget"]["epsilon_remaining"] == pytest.approx(1.0)
    refused = _ask(api, DEMO_SQL, 2)  # 4 this year in the space: past the yearly grant's 3
    assert refused.status_code == 429, refused.text
    assert "every grant you hold in a space binds" in refused.json()["detail"]
    assert _ask(api, DEMO_SQL, 1).status_code == 200  # exactly 3
    statuses = api.spend_statuses()
    assert statuses == ["released", "released"]  # the refused reservation was rolled back
