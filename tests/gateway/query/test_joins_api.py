"""Joins on the privacy unit, public reference tables, row-level expressions and post-processing, over HTTP."""

from __future__ import annotations

from typing import Any

import pytest

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
    print(sql, response.json()["columns"], response.json()["rows"][:3])
