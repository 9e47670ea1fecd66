"""The tree shows the architecture: a small root, subpackages that say their job, and README's table
of where things live kept in step with the files."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = ROOT / "gateway"
SUBPACKAGES = ["cli", "http", "query", "extract", "demo", "federation", "data", "store", "keys"]
NESTED = ["gateway/http/console"]
"""Packages inside a subpackage, each with a row of its own."""


def _readme_rows() -> dict[str, str]:
    rows = {}
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\| `(gateway/[a-z_]*/?(?:[a-z_]+/)?)` \| (.*) \|$", line)
        if match:
            rows[match.group(1).rstrip("/")] = match.group(2)
    return rows


def test_the_root_of_the_gateway_holds_at_most_six_modules() -> None:
    modules = sorted(path.name for path in GATEWAY.glob("*.py"))
    assert len(modules) <= 6, modules
    packages = sorted(path.name for path in GATEWAY.iterdir() if (path / "__init__.py").is_file())
    assert packages == sorted(SUBPACKAGES)


def test_every_subpackage_says_its_job_in_one_line() -> None:
    for name in SUBPACKAGES:
        docstring = ast.get_docstring(ast.parse((GATEWAY / name / "__init__.py").read_text(encoding="utf-8")))
        assert docstring, name
        assert len(docstring.splitlines()) <= 2, (name, docstring)  # one sentence, wrapped at most once


def test_readme_names_every_module_of_every_subpackage_and_nothing_else() -> None:
    rows = _readme_rows()
    assert set(rows) == {"gateway"} | {f"gateway/{name}" for name in SUBPACKAGES} | set(NESTED)
    for row, text in rows.items():
        directory = ROOT / row
        named = set(re.findall(r"`([a-z_]+\.py)`", text))
        present = {path.name for path in directory.glob("*.py") if path.name not in {"__init__.py", "__main__.py"}}
        assert named == present, (row, sorted(named ^ present))


def test_the_readme_check_sees_a_missing_module(tmp_path: Path) -> None:
    row = "| `gateway/keys/` | keys (`audit_signing.py`) |"
    assert set(re.findall(r"`([a-z_]+\.py)`", row)) == {"audit_signing.py"}
    present = {path.name for path in (GATEWAY / "keys").glob("*.py") if path.name != "__init__.py"}
    assert present - {"audit_signing.py"}, "the check would pass vacuously"


def test_no_cli_module_is_over_350_lines() -> None:
    sizes = {path.name: len(path.read_text(encoding="utf-8").splitlines()) for path in (GATEWAY / "cli").glob("*.py")}
    assert max(sizes.values()) <= 350, sizes
