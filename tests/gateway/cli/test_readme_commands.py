"""README's commands run as written, and every command says what it does in ``datapoort --help``."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from gateway.cli import app
from gateway.query.json_frontend import JsonPlan

README = Path(__file__).resolve().parents[3] / "README.md"
runner = CliRunner()


def _shell_blocks() -> list[list[str]]:
    blocks, current, inside = [], [], False
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            if inside:
                blocks.append(current)
            current, inside = [], line.strip() == "```sh"
            continue
        if inside:
            current.append(line)
    return blocks


def _commands(block: list[str]) -> list[str]:
    """The block's commands, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", "", "\n".join(block))
    commands = []
    for line in joined.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        for part in re.split(r"\s*(?:&&|;)\s*", line):
            if part:
                commands.append(part)
    return commands


def test_every_datapoort_command_in_readme_names_the_venv_binary() -> None:
    commands = [command for block in _shell_blocks() for command in _commands(block)]
    bare = [command for command in commands if command.split()[0] == "datapoort"]
    assert commands, "README has no shell blocks"
    assert bare == []


def test_the_administration_example_runs_as_written(demo_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAPOORT_DATA_DIR", str(demo_data_dir))
    block = next(block for block in _shell_blocks() if any("orgs create veiligheid" in line for line in block))
    ran = 0
    for command in _commands(block):
        arguments = shlex.split(command)
        assert arguments[0] == ".venv/bin/datapoort", command
        if any(argument.startswith("<") for argument in arguments):
            continue  # ids only the earlier commands print
        result = runner.invoke(app, arguments[1:])
        assert result.exit_code == 0, (command, result.output)
        ran += 1
    assert ran >= 7


def test_the_json_plan_example_is_complete() -> None:
    text = README.read_text(encoding="utf-8")
    start = text.index('`{"dataset": "residents"')
    example = text[start + 1 : text.index("}`", start) + 1]
    plan = JsonPlan.model_validate(json.loads(example.replace("\n", " ")))
    assert plan.order_by
    assert plan.order_by[0].column == "mean_income"


def _commands_of(group: Any, prefix: str = "") -> list[tuple[str, Any]]:
    found = []
    for name, command in group.commands.items():
        found.append((f"{prefix}{name}", command))
        if hasattr(command, "commands"):  # a group (typer carries its own click)
            found.extend(_commands_of(command, f"{prefix}{name} "))
    return found


def test_every_command_has_a_help_line() -> None:
    root = typer.main.get_command(app)
    commands = _commands_of(root)
    assert len(commands) > 30
    silent = [name for name, command in commands if not (command.get_short_help_str(limit=200) or "").strip()]
    assert silent == []
