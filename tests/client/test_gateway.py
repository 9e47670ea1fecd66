"""The client against a real served gateway: answers as DataFrames with the reported intervals, budgets,
datasets, streamed extracts, comparisons, and refusals as typed exceptions."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import polars as pl
import pytest
from datapoort_client import (
    AuthenticationFailed,
    BudgetExhausted,
    Gateway,
    InvalidQuery,
    PolicyDenied,
    QueryNotSupported,
)

from tests.client.conftest import EXPORT_PURPOSE, PURPOSE, Served

PER_WIJK = "SELECT wijk, COUNT(*) AS n, AVG(income) AS gem, MEDIAN(income) AS med FROM residents GROUP BY wijk"


@pytest.fixture
def analyst(served: Served) -> Iterator[Gateway]:
    with Gateway(served.url, served.keys["analyst"]) as gateway:
        yield gateway


def _spent(gateway: Gateway, dataset: str = "residents") -> float:
    budgets = gateway.budget()
    return float(budgets.loc[budgets["dataset"] == dataset, "epsilon_spent"].iloc[0])


def test_a_query_is_a_dataframe_with_the_reported_intervals_and_its_privacy(analyst: Gateway) -> None:
    before = _spent(analyst)
    df = analyst.query(PER_WIJK, purpose=PURPOSE, epsilon=0.6)
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == [
        "wijk", "n", "n_lower", "n_upper", "gem", "gem_lower", "gem_upper", "med", "med_lower", "med_upper",
    ]  # fmt: skip
    assert len(df) == 10
    assert df["wijk"].str.startswith("WK9999").all()
    for name in ("n", "gem"):
        assert (df[f"{name}_lower"] <= df[name]).all()
        assert (df[name] <= df[f"{name}_upper"]).all()
    privacy = df.attrs["privacy"]
    # A count's interval is the one the gateway reported, the same for every wijk.
    half_width = privacy["aggregates"]["n"]["half_width"]
    assert (df["n_upper"] - df["n"]).tolist() == pytest.approx([half_width] * 10)
    assert df["med_lower"].isna().all()  # a median is reported with a rank interval: no value bounds
    assert privacy["epsilon_spent"] == pytest.approx(0.6)
    assert privacy["aggregates"]["n"]["mechanism"] == "discrete_laplace"
    assert len(privacy["request_id"]) == 32
    assert _spent(analyst) - before == pytest.approx(privacy["epsilon_spent"])
    assert privacy["budget"]["epsilon_remaining"] == pytest.approx(10 - _spent(analyst))
    assert analyst.last_report == privacy


def test_the_polars_backend_and_a_json_plan(analyst: Gateway) -> None:
    plan = {"dataset": "jeugdzorg", "group_by": ["wijk"], "aggregates": [{"function": "count", "alias": "trajecten"}]}
    df = analyst.query(plan=plan, purpose=PURPOSE, backend="polars")
    assert isinstance(df, pl.DataFrame)
    assert df.columns == ["wijk", "trajecten", "trajecten_lower", "trajecten_upper"]
    assert df.schema["trajecten_upper"] == pl.Float64
    assert df.height == 10
    assert analyst.last_report is not None
    assert analyst.last_report["epsilon_spent"] == pytest.approx(0.5)


def test_an_accuracy_target_sets_the_interval(analyst: Gateway) -> None:
    df = analyst.query("SELECT COUNT(*) AS n FROM residents", purpose=PURPOSE, accuracy=20, confidence=0.9)
    assert df.attrs["privacy"]["confidence"] == 0.9
    assert float(df["n_upper"].iloc[0] - df["n"].iloc[0]) <= 20
    with pytest.raises(ValueError, match="confidence goes with accuracy"):
        analyst.query("SELECT COUNT(*) FROM residents", purpose=PURPOSE, confidence=0.9)


def test_an_estimate_spends_nothing(analyst: Gateway) -> None:
    before = analyst.budget()
    estimate = analyst.estimate(PER_WIJK, purpose=PURPOSE, epsilon=1.5)
    assert estimate["epsilon"] == pytest.approx(1.5)
    assert estimate["budget"]["affordable"] is True
    assert set(estimate["aggregates"]) == {"n", "gem", "med"}
    pd.testing.assert_frame_equal(analyst.budget(), before)


def test_budget_and_datasets(analyst: Gateway) -> None:
    budgets = analyst.budget()
    assert {"unit_space", "dataset", "purpose", "epsilon_spent", "epsilon_remaining", "caps"} <= set(budgets.columns)
    assert set(budgets["dataset"]) >= {"residents", "jeugdzorg"}
    assert (budgets["epsilon_spent"] + budgets["epsilon_remaining"] == budgets["epsilon_per_period"]).all()
    assert isinstance(analyst.budget(backend="polars"), pl.DataFrame)
    names = {dataset["name"] for dataset in analyst.datasets()}
    assert {"residents", "jeugdzorg", "kerncijfers"} <= names
    assert "wijk" in analyst.dataset("jeugdzorg")["columns"]


def test_a_comparison_lists_this_gemeente(analyst: Gateway) -> None:
    df = analyst.compare("SELECT wijk, COUNT(*) AS n FROM jeugdzorg GROUP BY wijk", purpose=PURPOSE)
    assert list(df.columns[:3]) == ["gemeente", "peer", "status"]
    assert {"wijk", "n", "n_lower", "n_upper", "error"} <= set(df.columns)
    assert len(df) == 10
    assert (df["status"] == "answered").all()
    assert df["peer"].isna().all()
    report = df.attrs["privacy"]
    assert report["epsilon_spent"] == pytest.approx(0.5)
    assert [entry["status"] for entry in report["gemeenten"]] == ["answered"]


def test_an_extract_streams_to_a_file_with_its_facts(served: Served, tmp_path: Path) -> None:
    path = tmp_path / "jeugdzorg.csv"
    with Gateway(served.url, served.keys["partner"]) as partner:
        result = partner.extract(
            "jeugdzorg",
            purpose=EXPORT_PURPOSE,
            columns=["person_id", "wijk", "start_date", "zorgvorm"],
            path=path,
            chunk_size=512,
        )
        rows = list(csv.DictReader(path.read_text().splitlines()))
        assert result.records == len(rows) > 0
        assert result.bytes_written == path.stat().st_size
        assert (result.k, result.path) == (2, path)
        assert result.suppressed >= 0
        assert len(result.extract_id) > 0
        assert "start_date:year" in result.generalisations
        one_wijk = partner.extract(
            "jeugdzorg", purpose=EXPORT_PURPOSE, columns=["wijk", "zorgvorm"], path=tmp_path / "wk.csv",
            wijk="WK999900",
        )  # fmt: skip
        kept = list(csv.DictReader((tmp_path / "wk.csv").read_text().splitlines()))
        assert one_wijk.records == len(kept)
        assert {row["wijk"] for row in kept} <= {"WK999900"}
        with pytest.raises(PolicyDenied):
            partner.extract("jeugdzorg", purpose=PURPOSE, columns=["wijk"], path=tmp_path / "refused.csv")
    assert not (tmp_path / "refused.csv").exists()
    assert not (tmp_path / "refused.csv.part").exists()


def test_refusals_are_typed(served: Served, analyst: Gateway) -> None:
    with Gateway(served.url, "dpk_" + "a" * 76) as stranger, pytest.raises(AuthenticationFailed) as failed:
        stranger.budget()
    assert (failed.value.status, failed.value.code) == (401, "authentication_failed")
    assert failed.value.request_id
    with pytest.raises(PolicyDenied) as denied:
        analyst.query("SELECT COUNT(*) FROM residents", purpose="geen-doel")
    assert denied.value.code == "policy_denied"
    assert denied.value.status == 403
    with pytest.raises(InvalidQuery) as invalid:
        analyst.query("SELEC COUNT(*) FROM residents", purpose=PURPOSE)
    assert "parsed" in str(invalid.value.detail)
    with pytest.raises(QueryNotSupported):
        analyst.query("SELECT * FROM residents", purpose=PURPOSE)


def test_an_exhausted_budget_says_what_is_left_and_what_was_asked(fresh_gateway: Served) -> None:
    with Gateway(fresh_gateway.url, fresh_gateway.keys["analyst"]) as gateway:
        for _ in range(5):  # the demo's analyst may spend 10 a month, at most 2 a query
            gateway.query("SELECT COUNT(*) FROM jeugdzorg", purpose=PURPOSE, epsilon=2.0)
        with pytest.raises(BudgetExhausted) as exhausted:
            gateway.query("SELECT COUNT(*) FROM jeugdzorg", purpose=PURPOSE, epsilon=2.0)
        error = exhausted.value
        assert (error.status, error.code) == (429, "budget_exhausted")
        assert error.epsilon_requested == pytest.approx(2.0)
        assert error.epsilon_remaining == pytest.approx(0.0, abs=1e-9)
        assert error.request_id
        assert _spent(gateway, "jeugdzorg") == pytest.approx(10.0)
