"""The black-box privacy audit (``benchmarks/privacy_audit.py``) in the suite: the engine's releases keep
their declared epsilon on neighbouring datasets, HTTP answers do not tell D from D', and the audit
catches the planted bugs it exists for.

Each empirical bound is a (1 - ALPHA) lower confidence bound on the true privacy loss, so a correct
mechanism fails a test with probability at most ALPHA: 1e-4 per bound keeps the suite's false alarms
below about one in a thousand runs, while the planted bugs (true loss 2x and 2.5x the declared) are
caught with a wide margin at this sample size."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from anonymization._calibration import planted_bug_weaker_noise
from gateway.data.snapshots import planted_bug_skip_bounding

RELEASES = 2_000
ALPHA = 1e-4


def _load_audit() -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "privacy_audit.py"
    sys.path.append(str(path.parent))  # for its _harness import (appended: never shadows a package)
    spec = importlib.util.spec_from_file_location("privacy_audit", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["privacy_audit"] = module
    spec.loader.exec_module(module)
    return module


privacy_audit = _load_audit()
COUNT = [mechanism for mechanism in privacy_audit.MECHANISMS if mechanism.name == "count"]


def test_every_mechanism_keeps_its_declared_epsilon_on_neighbouring_datasets(tmp_path: Path) -> None:
    findings = privacy_audit.audit(tmp_path, releases=RELEASES, alpha=ALPHA)
    assert {finding.mechanism for finding in findings} == {
        "count", "sum", "avg", "variance", "median", "selection", "join", "case",
    }  # fmt: skip
    assert {finding.pair for finding in findings} == {"m_rows_at_the_bound", "more_rows_than_allowed"}
    broken = [finding for finding in findings if not finding.holds]
    assert broken == []


def test_http_answers_do_not_tell_d_from_d_prime(tmp_path: Path) -> None:
    """Before the snapshots, the malformed record made every query on D' answer 503 where D answered
    200, and one person with m+1 rows made every query on D' take about 80x as long."""
    channels = privacy_audit.side_channels(tmp_path, requests=40)
    assert {channel.pair for channel in channels} == {"malformed_record", "more_rows_than_allowed"}
    for channel in channels:
        assert channel.same_outcomes, channel
        assert abs(channel.median_ratio - 1) <= 0.2, channel
        assert channel.ks_p_value >= 0.01, channel


def test_the_audit_catches_noise_at_half_the_certified_scale(tmp_path: Path) -> None:
    with planted_bug_weaker_noise(0.5):
        findings = privacy_audit.audit(
            tmp_path, releases=RELEASES, alpha=ALPHA, mechanisms=COUNT, pairs=("m_rows_at_the_bound",)
        )
    assert [finding.holds for finding in findings] == [False], findings


def test_the_audit_catches_skipped_bounding(tmp_path: Path) -> None:
    with planted_bug_skip_bounding():
        findings = privacy_audit.audit(
            tmp_path, releases=RELEASES, alpha=ALPHA, mechanisms=COUNT, pairs=("more_rows_than_allowed",)
        )
    assert [finding.holds for finding in findings] == [False], findings


def test_the_audit_catches_a_join_priced_as_one_row_per_person(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A join whose bound ignored that one person's rows multiply (sensitivity 1 instead of 2 x 2)."""
    import gateway.query.joins as joins

    monkeypatch.setattr(joins.math, "prod", lambda _values: 1)
    join = [mechanism for mechanism in privacy_audit.MECHANISMS if mechanism.name == "join"]
    findings = privacy_audit.audit(
        tmp_path, releases=RELEASES, alpha=ALPHA, mechanisms=join, pairs=("m_rows_at_the_bound",)
    )
    assert [finding.holds for finding in findings] == [False], findings


@pytest.mark.parametrize("switch", ["_NOISE_FACTOR_FOR_AUDIT", "_SKIP_BOUNDING_FOR_AUDIT"])
def test_the_planted_bugs_are_off_and_out_of_reach_of_settings(switch: str) -> None:
    import anonymization._calibration as calibration
    import gateway.data.snapshots as snapshots
    from gateway.settings import Settings

    assert calibration._NOISE_FACTOR_FOR_AUDIT == 1.0
    assert snapshots._SKIP_BOUNDING_FOR_AUDIT is False
    assert not any("planted" in name or "audit_bug" in name for name in Settings.model_fields)
    for module in (calibration, snapshots):
        source = Path(module.__file__ or "").read_text(encoding="utf-8")
        assert "os.environ" not in source
        assert "getenv" not in source
    assert switch in (Path(calibration.__file__ or "").read_text() + Path(snapshots.__file__ or "").read_text())
