"""Every benchmark starts as a script (imports and argument parsing), so none rots unseen between runs.

Found the hard way: run as a script, ``benchmarks/audit.py`` shadowed the ``audit`` package for the
other benchmarks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted(
    path for path in (Path(__file__).parent.parent / "benchmarks").glob("*.py") if not path.name.startswith("_")
)


def test_the_benchmarks_are_there() -> None:
    assert {path.stem for path in BENCHMARKS} >= {"audit", "demo_query", "dp_query", "extract", "policy_decision"}


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda path: path.stem)
def test_a_benchmark_starts(script: Path) -> None:
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--quick" in result.stdout
    assert "--json" in result.stdout
