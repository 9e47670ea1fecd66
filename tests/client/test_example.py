"""The worked example runs as a script against a served gateway and draws its plot."""

from __future__ import annotations

import runpy
import struct
from pathlib import Path

import pytest

from tests.client.conftest import Served

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "jeugdzorg_per_wijk.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_the_jeugdzorg_example_plots_the_counts_with_their_intervals(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    png = tmp_path / "plots" / "jeugdzorg-per-wijk.png"
    monkeypatch.setenv("DATAPOORT_URL", served.url)
    monkeypatch.setenv("DATAPOORT_API_KEY", served.keys["analyst"])
    monkeypatch.setenv("DATAPOORT_EXAMPLE_PNG", str(png))
    namespace = runpy.run_path(str(EXAMPLE), run_name="__main__")
    data = png.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1080, 576)  # 9 x 4.8 inches at 120 dpi
    assert 20_000 < len(data) < 1_000_000
    df = namespace["df"]
    assert list(df.columns) == ["wijk", "wijknaam", "trajecten", "trajecten_lower", "trajecten_upper"]
    assert len(df) == 10
    assert namespace["summary"]["epsilon_spent"] == pytest.approx(1.0)
