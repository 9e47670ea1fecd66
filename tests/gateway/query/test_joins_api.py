"""Joins on the privacy unit, public reference tables, row-level expressions and post-processing, over HTTP."""

from __future__ import annotations

import json
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.http.rate_limit import RateLimiter
from tests.gateway.conftest import Api

PURPOSE = "beleidsinformatie"


def ask(api: Api, sql: str, **extra: Any) -> Any:
    return api.query(api.keys["analyst"], {"purpose": PURPOSE, "sql": sql, "epsilon": 1.0, **extra})


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT r.wijk, COUNT(*) AS n FROM jeugdzorg j JOIN residents r ON j.person_id = r.person_id GROUP BY r.wijk",
        "SELECT r.wijk, COUNT(*) * 1000.0 / k.inwoners AS per_1000 FROM jeugdzorg j "
        "JOIN residents r ON j.person_id = r.person_id JOIN kerncijfers k ON r.wijk = k.wijk GROUP BY r.wijk",
        "SELECT CASE WHEN birth_year < 1960 THEN 'oud' ELSE 'jong' END AS band, COUNT(*) FROM residents GROUP BY band",
        "SELECT SUM(CASE WHEN birth_year < 1960 THEN 1 ELSE 0 END) AS ouderen, COUNT(*) AS n FROM residents",
        "SELECT wijk, SUM(income) / COUNT(*) AS mean_income FROM residents GROUP BY wijk HAVING COUNT(*) > 10",
        "SELECT TOP 3 wijk, COUNT(*) AS n FROM residents GROUP BY wijk ORDER BY n DESC",
        "SELECT VAR(income), STDEV(income), ROUND(AVG(income), 0) AS avg_rounded, PI() AS pi FROM residents",
        "SELECT wijk FROM residents GROUP BY wijk",
        "SELECT COUNT(DISTINCT person_id) AS persons FROM jeugdzorg",
        "SELECT COUNT(*) FROM (SELECT * FROM residents WHERE birth_year > 2000) AS young",
        "SELECT EXTRACT(MONTH FROM datum) AS maand, COUNT(*) FROM woninginbraak GROUP BY maand",
        "SELECT LEFT(buurt, 6) AS b, COUNT(*) FROM residents GROUP BY LEFT(buurt, 6)",
        "SELECT SUM(income + birth_year) FROM residents",
        "SELECT wijk, inwoners FROM kerncijfers ORDER BY inwoners DESC",
    ],
)
def test_analysts_questions_are_answered(api: Api, sql: str) -> None:
    response = ask(api, sql)
    assert response.status_code == 200, response.text
    assert response.json()["rows"], sql


def test_a_join_is_charged_once_to_its_unit_space_and_audited_on_its_datasets(api: Api) -> None:
    spends = api.spends()
    response = ask(
        api,
        "SELECT r.wijk, COUNT(*) * 1000.0 / k.inwoners AS per_1000, COUNT(*) AS n FROM jeugdzorg j "
        "JOIN residents r ON j.person_id = r.person_id JOIN kerncijfers k ON r.wijk = k.wijk GROUP BY r.wijk",
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert api.spends() == spends + 1
    join = body["privacy"]["join"]
    assert join == {**join, "datasets": ["jeugdzorg", "residents"], "public_tables": ["kerncijfers"]}
    assert join["max_contributions"] == 3  # jeugdzorg's 3 x residents' 1
    assert body["privacy"]["epsilon_spent"] == pytest.approx(1.0)
    rates = body["privacy"]["aggregates"]["per_1000"]
    assert len(rates["half_width"]) == len(body["rows"])
    # The rate is the released count over the public figure: post-processing of the same noisy count.
    figures = pq.read_table(api.demo_dir / "kerncijfers.parquet").to_pydict()
    inwoners = dict(zip(figures["wijk"], figures["inwoners"], strict=True))
    for (wijk, rate, count), half_width in zip(body["rows"], rates["half_width"], strict=True):
        assert rate == pytest.approx(count * 1000.0 / inwoners[wijk])
        count_width = body["privacy"]["aggregates"]["n"]["half_width"]
        assert half_width == pytest.approx(count_width * 1000.0 / inwoners[wijk])
    event = api.events()[-1]
    assert event.dataset == "jeugdzorg"
    assert "JOIN residents AS r ON j.person_id = r.person_id" in (event.query or "")


def test_a_public_table_alone_is_answered_exactly_and_spends_nothing(api: Api) -> None:
    spends = api.spends()
    response = ask(api, "SELECT wijk, inwoners FROM kerncijfers WHERE inwoners > 0 ORDER BY wijk LIMIT 3")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["columns"] == ["wijk", "inwoners"]
    assert len(body["rows"]) == 3
    assert body["privacy"]["epsilon_spent"] == 0.0
    assert api.spends() == spends
    assert api.events()[-1].dataset == "kerncijfers"


@pytest.mark.parametrize(
    ("sql", "status", "error"),
    [
        ("SELECT COUNT(*) FROM jeugdzorg j JOIN residents r ON j.wijk = r.wijk", 400, "query_not_supported"),
        ("SELECT COUNT(*) FROM kerncijfers k JOIN kerncijfers l ON k.wijk = l.wijk", 200, None),
        ("SELECT read_csv('/etc/passwd') FROM kerncijfers", 400, "query_not_supported"),
        ("SELECT nope FROM kerncijfers", 400, "invalid_query"),
        ("SELECT COUNT(*) FROM jeugdzorg j JOIN bijstand b ON j.person_id = b.person_id", 200, None),
    ],
)
def test_refusals_name_their_reason(api: Api, sql: str, status: int, error: str | None) -> None:
    response = ask(api, sql)
    assert response.status_code == status, response.text
    if error is not None:
        assert response.json()["error"] == error


_SELECTS = st.sampled_from(
    [
        "COUNT(*)",
        "SUM(income)",
        "AVG(income + birth_year)",
        "SUM(CASE WHEN birth_year > 1990 THEN 1 ELSE 0 END)",
        "SUM(income) / COUNT(*)",
        "ROUND(AVG(income), 2)",
        "POWER(COUNT(*), 3)",
        "SQRT(SUM(income))",
        "LN(COUNT(*) - 1000000)",
        "COUNT(*) / 0",
        "EXP(AVG(income))",
        "COUNT(DISTINCT person_id)",
        "VAR(income)",
        "MEDIAN(income * 2)",
        "SUM(income * income * income)",
        "SUM(birth_year / 0)",
        "COALESCE(wijk, 'x')",
        "wijk",
        "k.inwoners",
    ]
)
_GROUPS = st.sampled_from(
    ["", " GROUP BY wijk", " GROUP BY LEFT(pc6, 4)", " GROUP BY CASE WHEN income > 1 THEN 'a' ELSE 'b' END"]
)
_TAILS = st.sampled_from(["", " HAVING COUNT(*) > 5", " ORDER BY 1 DESC", " LIMIT 2", " HAVING wijk = 3"])
_FROMS = st.sampled_from(
    [
        "residents",
        "(SELECT * FROM residents WHERE income > 100) AS rich",
        "residents r JOIN kerncijfers k ON r.wijk = k.wijk",
        "jeugdzorg j JOIN residents r ON j.person_id = r.person_id",
        "jeugdzorg j LEFT JOIN residents r ON j.person_id = r.person_id",
    ]
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(selects=st.lists(_SELECTS, min_size=1, max_size=3), source=_FROMS, group=_GROUPS, tail=_TAILS)
def test_any_mix_of_the_new_constructs_is_answered_or_refused_never_a_server_error(
    api: Api, selects: list[str], source: str, group: str, tail: str
) -> None:
    api.client.app.state.rate_limiter = RateLimiter(1e9, 1e9)  # type: ignore[attr-defined]  # not what is tested
    items = ", ".join(f"{select} AS c{index}" for index, select in enumerate(selects))
    response = ask(api, f"SELECT {items} FROM {source}{group}{tail}", epsilon=0.01)
    assert response.status_code in (200, 400, 403, 404, 429), response.text
    if response.status_code != 200:
        assert response.json()["error"]
    else:
        json.dumps(response.json(), allow_nan=False)  # a released answer is always valid JSON
