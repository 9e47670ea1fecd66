"""The DP engine through the HTTP API: every aggregate, both front doors, accuracy, estimates, the
catalog and budget views, and concurrent spending against one budget."""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.gateway.conftest import Api

PURPOSE = "beleidsinformatie"


def _exact(demo_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    return (
        duckdb.connect()
        .execute(sql.replace("residents", f"read_parquet('{demo_dir / 'residents.parquet'}')"))
        .fetchall()
    )


def _ask(api: Api, body: dict[str, Any], key: str = "analyst") -> Any:
    response = api.query(api.keys[key], {"purpose": PURPOSE, **body})
    assert response.status_code == 200, response.text
    return response.json()


def test_means_per_wijk_are_close_and_carry_their_accuracy(api: Api) -> None:
    body = _ask(api, {"sql": "SELECT wijk, AVG(income) AS mean_income FROM residents GROUP BY wijk", "epsilon": 2})
    exact = dict(_exact(api.demo_dir, "SELECT wijk, avg(income) FROM residents GROUP BY wijk"))
    report = body["privacy"]["aggregates"]["mean_income"]
    assert len(report["half_width"]) == len(body["rows"]) == 10
    for (wijk, value), half_width in zip(body["rows"], report["half_width"], strict=True):
        assert 0 <= value <= 250_000
        assert abs(value - exact[wijk]) < 6 * half_width  # the half-width is first-order: allow a margin


def test_median_and_percentile_land_near_the_truth(api: Api) -> None:
    body = _ask(
        api,
        {
            "sql": "SELECT MEDIAN(income) AS med, PERCENTILE_CONT(0.9) WITHIN GROUP (ORDER BY income) AS p90 "
            "FROM residents WHERE birth_year <= 2000",
            "epsilon": 2,
        },
    )
    (median, p90) = body["rows"][0]
    (exact_median, exact_p90) = _exact(
        api.demo_dir, "SELECT median(income), quantile_cont(income, 0.9) FROM residents WHERE birth_year <= 2000"
    )[0]
    assert abs(median - exact_median) <= 2500  # a few grid steps of 1250
    assert abs(p90 - exact_p90) <= 5000
    assert body["privacy"]["aggregates"]["med"]["mechanism"] == "noisy_min_exponential"


def test_histogram_sum_and_spread(api: Api) -> None:
    histogram = _ask(
        api, {"sql": "SELECT household_type, COUNT(*) FROM residents GROUP BY household_type", "epsilon": 2}
    )
    assert [row[0] for row in histogram["rows"]] == [
        "alleenstaand", "paar_zonder_kinderen", "paar_met_kinderen", "eenoudergezin", "overig",
    ]  # fmt: skip
    filtered = _ask(api, {"sql": "SELECT SUM(income) FROM residents WHERE wijk = 'WK999901'", "epsilon": 2})
    (exact_sum,) = _exact(api.demo_dir, "SELECT sum(income) FROM residents WHERE wijk = 'WK999901'")[0]
    half_width = filtered["privacy"]["aggregates"]["sum_income"]["half_width"]
    assert abs(filtered["rows"][0][0] - exact_sum) <= 3 * half_width
    spread = _ask(api, {"sql": "SELECT STDDEV(birth_year), VAR_POP(birth_year) FROM residents", "epsilon": 2})
    (exact_sd, exact_var) = _exact(api.demo_dir, "SELECT stddev_samp(birth_year), var_pop(birth_year) FROM residents")[
        0
    ]
    assert spread["rows"][0][0] == pytest.approx(exact_sd, rel=0.05)
    assert spread["rows"][0][1] == pytest.approx(exact_var, rel=0.1)


def test_the_json_plan_answers_the_same_question_as_sql(api: Api) -> None:
    plan = {
        "dataset": "residents",
        "group_by": ["sex"],
        "aggregates": [{"function": "count", "alias": "n"}],
        "where": {"and": [{"column": "birth_year", "op": "between", "low": 1950, "high": 1990}]},
    }
    by_plan = _ask(api, {"plan": plan, "epsilon": 2})
    by_sql = _ask(
        api,
        {
            "sql": "SELECT sex, COUNT(*) AS n FROM residents WHERE birth_year BETWEEN 1950 AND 1990 GROUP BY sex",
            "epsilon": 2,
        },
    )
    assert by_plan["columns"] == by_sql["columns"] == ["sex", "n"]
    events = api.events()
    assert events[-1].query == events[-2].query  # one internal plan, one normalised form in the log
    exact = dict(
        _exact(api.demo_dir, "SELECT sex, count(*) FROM residents WHERE birth_year BETWEEN 1950 AND 1990 GROUP BY sex")
    )
    for sex, count in by_plan["rows"]:
        assert abs(count - exact[sex]) <= 20


@pytest.mark.parametrize(
    ("value", "sql"),
    [
        (1, "birth_year = 1"),
        (0, "birth_year = 0"),
        (-3, "birth_year = -3"),
        (True, "birth_year = TRUE"),
        ("a", "birth_year = 'a'"),
    ],
)
def test_json_scalars_keep_their_type(value: object, sql: str) -> None:
    from gateway.query.json_frontend import JsonPlan, plan_from_json

    plan = JsonPlan.model_validate(
        {
            "dataset": "residents",
            "aggregates": [{"function": "count"}],
            "where": {"column": "birth_year", "op": "=", "value": value},
        }
    )
    assert plan_from_json(plan).normalised().endswith(f"WHERE {sql}")


@pytest.mark.parametrize(
    ("plan", "status", "error"),
    [
        ({"dataset": "residents", "aggregates": [{"function": "sum"}]}, 400, "query_not_supported"),
        ({"dataset": "residents", "aggregates": [{"function": "quantile", "column": "income"}]}, 400, "invalid_query"),
        ({"dataset": "residents", "aggregates": [{"function": "max", "column": "income"}]}, 422, "invalid_request"),
        ({"dataset": "residents", "aggregates": []}, 422, "invalid_request"),
        (
            {
                "dataset": "residents",
                "aggregates": [{"function": "count"}],
                "where": {"column": "naam", "op": "like", "value": "a"},
            },
            422,
            "invalid_request",
        ),
        (
            {
                "dataset": "residents",
                "aggregates": [{"function": "count"}],
                "where": {"column": "birth_year", "op": "=", "value": "x"},
            },
            400,
            "invalid_query",
        ),
        (
            {"dataset": "residents", "group_by": ["bsn"], "aggregates": [{"function": "count"}]},
            400,
            "query_not_supported",
        ),
    ],
)
def test_bad_json_plans_are_refused_with_a_reason(api: Api, plan: dict[str, Any], status: int, error: str) -> None:
    response = api.query(api.keys["analyst"], {"purpose": PURPOSE, "plan": plan})
    assert (response.status_code, response.json()["error"]) == (status, error)


def test_an_estimate_spends_nothing_and_the_query_then_costs_what_it_said(api: Api) -> None:
    question = {"sql": "SELECT wijk, COUNT(*) FROM residents GROUP BY wijk", "accuracy": {"half_width": 25}}
    estimate = api.client.post(
        "/v1/query/estimate",
        json={"purpose": PURPOSE, **question},
        headers={"Authorization": f"Bearer {api.keys['analyst']}"},
    )
    assert estimate.status_code == 200
    assert api.spends() == 0
    assert api.events()[-1].action == "aggregate:estimate"
    assert estimate.json()["aggregates"]["count"]["half_width"] == pytest.approx(25)
    answer = _ask(api, question)
    assert answer["privacy"]["epsilon_spent"] == pytest.approx(estimate.json()["epsilon"])
    assert answer["privacy"]["aggregates"]["count"]["half_width"] == pytest.approx(25)


def test_accuracy_for_a_mean_is_refused_because_it_depends_on_the_data(api: Api) -> None:
    response = api.query(
        api.keys["analyst"],
        {"purpose": PURPOSE, "sql": "SELECT AVG(income) FROM residents", "accuracy": {"half_width": 10}},
    )
    assert response.status_code == 400
    assert "COUNT and SUM" in response.json()["detail"]


def test_the_catalog_shows_each_caller_only_what_it_may_use(api: Api) -> None:
    def get(path: str, key: str) -> Any:
        return api.client.get(path, headers={"Authorization": f"Bearer {api.keys[key]}"})

    analyst = get("/v1/datasets", "analyst").json()["datasets"]
    assert {d["name"] for d in analyst} == {"residents", "bijstand", "jeugdzorg", "wmo", "woninginbraak", "kerncijfers"}
    assert [d["name"] for d in get("/v1/datasets", "partner").json()["datasets"]] == ["jeugdzorg"]
    residents = get("/v1/datasets/residents", "analyst").json()
    assert residents["columns"]["wijk"]["public_keys"][0] == "WK999900"
    assert residents["columns"]["bsn"]["public_keys"] is None
    assert residents["columns"]["bsn"]["groupable"] is None
    assert residents["columns"]["wijk"]["groupable"] == "public_keys"
    assert residents["columns"]["pc6"]["groupable"] == "partition_selection"
    assert "MEDIAN" in residents["columns"]["income"]["aggregates"]
    assert residents["purposes"] == [PURPOSE]
    hidden = get("/v1/datasets/residents", "partner")
    unknown = get("/v1/datasets/nothing", "partner")
    assert hidden.status_code == unknown.status_code == 404
    assert hidden.json()["detail"] == "there is no dataset 'residents' you may use"
    assert "rows" not in json.dumps(residents)


def test_the_budget_view_follows_the_ledger(api: Api) -> None:
    _ask(api, {"sql": "SELECT COUNT(*) FROM residents", "epsilon": 0.75})
    budgets = api.client.get("/v1/budget", headers={"Authorization": f"Bearer {api.keys['analyst']}"}).json()["budgets"]
    residents = next(entry for entry in budgets if entry["dataset"] == "residents")
    assert residents["epsilon_spent"] == pytest.approx(0.75)
    assert residents["epsilon_remaining"] == pytest.approx(10 - 0.75)
    assert residents["caps"][0]["epsilon_spent"] == pytest.approx(0.75)
    assert api.events()[-1].action == "budget:read"


def test_concurrent_queries_never_overspend(api: Api) -> None:
    """100 queries at once against a budget that allows exactly 10 of them: exactly 10 succeed."""
    body = {"purpose": PURPOSE, "sql": "SELECT wijk, COUNT(*) FROM residents GROUP BY wijk", "epsilon": 1.0}

    def ask(_: int) -> int:
        return int(api.query(api.keys["analyst"], body).status_code)

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(ask, range(100)))
    assert statuses.count(200) == 10
    assert statuses.count(429) == 90
    spending = [event for event in api.events() if event.privacy_cost]
    assert len(spending) == 10
    assert math.fsum(event.privacy_cost or 0 for event in spending) == pytest.approx(10.0)
    assert api.spends() == 10


def test_concurrent_queries_that_fail_after_the_read_never_overspend(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure after the read is charged; the charge is reserved under the lock before the read, so 100
    failing queries against a budget of 10 still spend exactly 10 (before, the charge skipped the check)."""
    from gateway.exceptions import SourceUnavailable

    def broken(*args: object, **kwargs: object) -> list[tuple[Any, ...]]:
        raise SourceUnavailable("the data source could not answer this query")

    monkeypatch.setattr(api.client.app.state.gateway.sources, "run", broken)  # type: ignore[attr-defined]
    body = {"purpose": PURPOSE, "sql": "SELECT COUNT(*) FROM residents", "epsilon": 1.0}

    def ask(_: int) -> int:
        return int(api.query(api.keys["analyst"], body).status_code)

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(ask, range(100)))
    assert statuses.count(503) == 10
    assert statuses.count(429) == 90
    assert api.spend_statuses() == ["failed"] * 10
    assert len([event for event in api.events() if event.privacy_cost]) == 10


def _exact_groups(demo_dir: Path, column: str) -> dict[str, int]:
    rows = _exact(demo_dir, f"SELECT CAST({column} AS VARCHAR), COUNT(*) FROM residents GROUP BY 1")
    return {str(key): int(count) for key, count in rows}


def test_groups_without_public_keys_are_released_through_partition_selection(api: Api) -> None:
    exact = _exact_groups(api.demo_dir, "birth_year")
    answer = _ask(api, {"sql": "SELECT birth_year, COUNT(*) AS n FROM residents GROUP BY birth_year", "epsilon": 2.0})
    privacy = answer["privacy"]
    selection = privacy["group_selection"]
    assert selection["mechanism"] == "laplace_threshold"
    assert selection["delta"] <= 1e-9  # the default delta, as OpenDP certifies it
    assert privacy["delta_spent"] == selection["delta"]
    assert privacy["epsilon_spent"] == pytest.approx(2.0)
    assert privacy["definition"].startswith("(epsilon, delta)")
    released = dict(answer["rows"])
    assert released, "with 3,000 residents some birth years pass the threshold"
    threshold, scale = selection["threshold"], selection["scale"]
    for year in released:
        # Passing needs exact + noise >= threshold; noise below -30 scales has probability < 1e-13.
        assert exact[year] >= threshold - 30 * scale
    for year, count in exact.items():
        if count >= selection["reliable_count"] + 30 * scale:
            assert year in released
    assert len(released) < len(exact)  # the thin years stay out
    assert [row[0] for row in answer["rows"]] == sorted(released)
    with api.client.app.state.gateway.sessions() as session:  # type: ignore[attr-defined]
        from sqlalchemy import select

        from policies.models import BudgetSpend

        assert session.scalars(select(BudgetSpend.delta)).all() == [selection["delta"]]


def test_partition_selection_mixes_with_public_keys_and_other_aggregates(api: Api) -> None:
    answer = _ask(
        api,
        {
            "sql": "SELECT wijk, birth_year, COUNT(*), AVG(income) FROM residents "
            "GROUP BY wijk, birth_year ORDER BY wijk",
            "epsilon": 2.0,
            "delta": 1e-7,
        },
    )
    wijken = {row[0] for row in answer["rows"]}
    assert wijken <= set(_exact_groups(api.demo_dir, "wijk"))
    assert answer["privacy"]["group_selection"]["delta"] <= 1e-7
    assert answer["privacy"]["epsilon_spent"] == pytest.approx(2.0)


def test_pc6_groups_of_a_few_households_are_never_released(api: Api) -> None:
    """PC6 is a quasi-identifier without public keys: its small groups must not appear at all."""
    answer = _ask(api, {"sql": "SELECT pc6, COUNT(*) FROM residents GROUP BY pc6", "epsilon": 0.5, "delta": 1e-12})
    exact = _exact_groups(api.demo_dir, "pc6")
    # A group of c rows passes with probability about delta * e^((c - 1) / scale): over all groups < 1e-8.
    assert max(exact.values()) <= 5
    assert answer["rows"] == []
    assert set(answer["privacy"]["aggregates"]) == {"count"}


def test_partition_selection_needs_a_delta_budget(api: Api) -> None:
    api.execute('UPDATE "grant" SET delta_per_period = NULL')
    response = api.query(
        api.keys["analyst"], {"purpose": PURPOSE, "sql": "SELECT birth_year, COUNT(*) FROM residents GROUP BY 1"}
    )
    assert response.status_code in (400, 429)
    response = api.query(
        api.keys["analyst"],
        {"purpose": PURPOSE, "sql": "SELECT birth_year, COUNT(*) FROM residents GROUP BY birth_year"},
    )
    assert response.status_code == 429
    body = response.json()
    assert body["error"] == "budget_exhausted"
    assert body["delta_requested"] > 0
    assert body["delta_remaining"] == 0
    assert api.spends() == 0


def test_an_estimate_states_the_delta_and_the_threshold(api: Api) -> None:
    question = {"sql": "SELECT birth_year, COUNT(*) FROM residents GROUP BY birth_year", "delta": 1e-8}
    estimate = api.client.post(
        "/v1/query/estimate",
        json={"purpose": PURPOSE, **question},
        headers={"Authorization": f"Bearer {api.keys['analyst']}"},
    ).json()
    assert 0 < estimate["delta"] <= 1e-8
    assert estimate["group_selection"]["threshold"] > 1
    assert api.spends() == 0
    answer = _ask(api, question)
    assert answer["privacy"]["delta_spent"] == estimate["delta"]


@pytest.mark.parametrize("delta", [1e-5, 0.5])
def test_a_delta_beyond_the_per_query_maximum_is_refused(api: Api, delta: float) -> None:
    response = api.query(
        api.keys["analyst"],
        {"purpose": PURPOSE, "sql": "SELECT birth_year, COUNT(*) FROM residents GROUP BY birth_year", "delta": delta},
    )
    assert (response.status_code, response.json()["error"]) == (400, "invalid_query")
    assert api.spends() == 0


def test_the_most_deeply_nested_condition_accepted_is_answered(api: Api) -> None:
    """The nesting limits sit below what the parser and compiler can take: the worst accepted shape works."""

    def sql(predicates: int) -> str:
        chain = " AND ".join(["birth_year > 1900"] * predicates)
        return f"SELECT COUNT(*) FROM residents WHERE {'(' * 23}{chain}{')' * 23} AND NOT sex = 'X'"

    # Depth 23 + 1 NOT = 24, and 200 connectives: exactly at both limits.
    response = api.query(api.keys["analyst"], {"purpose": PURPOSE, "sql": sql(200), "epsilon": 0.01})
    assert response.status_code == 200, response.text
    response = api.query(api.keys["analyst"], {"purpose": PURPOSE, "sql": sql(201), "epsilon": 0.01})
    assert response.status_code == 400  # one connective past the limit
    where: dict[str, Any] = {"and": [{"column": "birth_year", "op": ">", "value": 1900}] * 178}
    for level in range(22):  # with the innermost "and" and the outer "not": 24 levels
        where = {"or" if level % 2 else "and": [where, {"column": "sex", "op": "!=", "value": "X"}]}
    where = {"not": where}
    plan = {"dataset": "residents", "aggregates": [{"function": "count"}], "where": where}
    response = api.query(api.keys["analyst"], {"purpose": PURPOSE, "plan": plan, "epsilon": 0.01})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("depth", [25, 60, 5000])
def test_conditions_nested_too_deeply_are_refused_not_crashed(api: Api, depth: int) -> None:
    sql = f"SELECT COUNT(*) FROM residents WHERE {'(' * depth}birth_year > 1{')' * depth}"
    nots = f"SELECT COUNT(*) FROM residents WHERE {'NOT ' * depth}birth_year > 1"
    where: dict[str, Any] = {"column": "birth_year", "op": ">", "value": 1}
    for _ in range(min(depth, 500)):  # deeper than this, the client's own JSON encoder gives up
        where = {"not": where}
    plan = {"dataset": "residents", "aggregates": [{"function": "count"}], "where": where}
    for body in ({"sql": sql[:10_000]}, {"sql": nots[:10_000]}, {"plan": plan}):
        response = api.query(api.keys["analyst"], {"purpose": PURPOSE, **body})
        assert response.status_code in (400, 422), response.text
        assert response.json()["error"] in ("invalid_query", "invalid_request")
    assert api.spends() == 0
