"""The client is a distribution of its own: it speaks HTTP to the gateway and imports nothing of the
server, so an analyst installs it without the gateway's dependencies (OpenDP, DuckDB, SQLAlchemy ...)."""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "client"
SERVER_PACKAGES = {"gateway", "policies", "audit", "anonymization"}
ALLOWED_THIRD_PARTY = {"httpx", "pandas", "polars"}
"""Its dependencies (polars: the optional extra)."""


def _imported(source: str) -> set[str]:
    """The top-level package of every absolute import in ``source``, wherever it appears."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _modules() -> list[Path]:
    return sorted((CLIENT / "datapoort_client").rglob("*.py"))


def test_no_module_of_the_client_imports_the_server() -> None:
    assert len(_modules()) >= 5
    for path in _modules():
        server = _imported(path.read_text(encoding="utf-8")) & SERVER_PACKAGES
        assert not server, f"{path.relative_to(ROOT)} imports {sorted(server)}"


def test_the_client_imports_only_the_standard_library_and_its_dependencies() -> None:
    allowed = set(sys.stdlib_module_names) | ALLOWED_THIRD_PARTY | {"datapoort_client"}
    for path in _modules():
        extra = _imported(path.read_text(encoding="utf-8")) - allowed
        assert not extra, f"{path.relative_to(ROOT)} imports {sorted(extra)}"


def test_the_check_sees_an_import_of_the_server_even_inside_a_function() -> None:
    source = "def f():\n    from gateway.query import service\n    import policies.budget\n"
    assert _imported(source) & SERVER_PACKAGES == {"gateway", "policies"}


def test_its_distribution_depends_on_httpx_and_pandas_only() -> None:
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["name"] == "datapoort-client"
    assert project["license"] == {"text": "EUPL-1.2"}
    assert project["requires-python"] == ">=3.11"
    names = {requirement.split(">")[0].split("<")[0].split("=")[0].strip() for requirement in project["dependencies"]}
    assert names == {"httpx", "pandas"}
    assert set(project["optional-dependencies"]) == {"polars"}
