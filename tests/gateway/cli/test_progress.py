"""Progress bars show on a terminal only: piped output (and a test's runner) stays exactly as it was."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from gateway.cli import app
from gateway.cli.progress import progress

runner = CliRunner()


def test_audit_verify_prints_only_its_verdict_when_not_on_a_terminal(demo_data_dir: Path) -> None:
    result = runner.invoke(app, ["audit", "verify", "--data-dir", str(demo_data_dir)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("audit log intact: ")
    assert len(result.stdout.splitlines()) == 1
    assert "\x1b" not in result.output
    assert "Verifying" not in result.output


def test_an_extract_to_a_file_writes_the_bytes_and_its_summary_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = b"person_id_pseudonym,wijk\n" + b"p,WK01\n" * 10_000
    facts = {"x-datapoort-records": "10000", "x-datapoort-k": "5", "x-datapoort-extract-id": "e1"}

    def answer(request: httpx.Request) -> httpx.Response:
        assert json.loads(request.content)["format"] == "csv"
        return httpx.Response(200, content=content, headers=facts)

    @contextmanager
    def stream(method: str, url: str, **kwargs: Any) -> Iterator[httpx.Response]:
        with (
            httpx.Client(transport=httpx.MockTransport(answer)) as client,
            client.stream(method, url, **kwargs) as response,
        ):
            yield response

    monkeypatch.setattr(httpx, "stream", stream)
    output = tmp_path / "extract.csv"
    result = runner.invoke(
        app,
        ["extract", "--key", "dpk_x", "--dataset", "jeugdzorg", "--purpose", "p", "--column", "wijk", "--output",
         str(output)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert output.read_bytes() == content
    assert result.output.startswith(f"{output}: 10000 records (k = 5")
    assert len(result.output.splitlines()) == 1
    assert "\x1b" not in result.output


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_bar_goes_to_stderr_and_stdout_stays_clean(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    with progress("Ingesting", total=3) as advance:
        for _ in range(3):
            advance(1)
    with progress("Verifying") as advance:  # no total: indeterminate
        advance(1)
    assert "Ingesting" in terminal.getvalue()
    assert "3/3" in terminal.getvalue()
    assert "Verifying" in terminal.getvalue()
    assert capsys.readouterr().out == ""


def test_off_a_terminal_nothing_is_written(monkeypatch: pytest.MonkeyPatch) -> None:
    piped = io.StringIO()
    monkeypatch.setattr("sys.stderr", piped)
    with progress("Ingesting", total=3, transfer=True) as advance:
        advance(1)
    assert piped.getvalue() == ""
