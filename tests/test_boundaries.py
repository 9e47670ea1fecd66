"""The package boundaries, checked by reading the source (import-linter checks the same in `make test`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "anonymization": {"fastapi", "starlette", "sqlalchemy", "gateway", "policies", "audit"},
    "policies": {"gateway", "fastapi", "starlette"},
    "audit": {"gateway", "fastapi", "starlette", "policies"},
}


def _imported_top_levels(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_import_what_it_must_not(package: str) -> None:
    offences = {
        str(path.relative_to(ROOT)): sorted(_imported_top_levels(path) & FORBIDDEN[package])
        for path in (ROOT / package).rglob("*.py")
    }
    assert {path: names for path, names in offences.items() if names} == {}


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import sqlalchemy\nfrom fastapi import FastAPI\nfrom . import sibling\n")
    assert _imported_top_levels(bad) == {"sqlalchemy", "fastapi"}
