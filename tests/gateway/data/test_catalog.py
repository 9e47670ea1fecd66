"""The catalog: the demo's loads, an operator's own dataset loads, and every mistake is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.data.catalog import load_catalog
from gateway.exceptions import CatalogError

OWN_CATALOG = """
datasets:
  schuldhulp:
    description: Schuldhulpverlening (CSV export)
    source: {kind: csv, path: data/schuldhulp.csv}
    privacy_unit: client_id
    max_contributions: 2
    columns:
      client_id: {type: string, kind: identifier}
      wijk: {type: string, kind: quasi_identifier, public_keys: {file: wijken.txt}}
      schuld: {type: float, kind: sensitive, lower: 0, upper: 100000}
"""


def test_the_demo_catalog_loads(demo_dir: Path) -> None:
    catalog = load_catalog(demo_dir / "catalog.yaml")
    residents = catalog.dataset("residents")
    assert residents is not None
    assert residents.privacy_unit == "person_id"
    assert residents.columns["wijk"].keys is not None
    assert len(residents.columns["wijk"].keys) == 10
    assert Path(residents.source.path).is_absolute()
    assert set(catalog.datasets) == {"residents", "bijstand", "jeugdzorg", "wmo", "woninginbraak", "kerncijfers"}
    assert catalog.datasets["kerncijfers"].public


def test_an_operators_own_catalog_resolves_paths_and_key_files(tmp_path: Path) -> None:
    (tmp_path / "wijken.txt").write_text("WK01\nWK02\n\n")
    (tmp_path / "catalog.yaml").write_text(OWN_CATALOG)
    dataset = load_catalog(tmp_path / "catalog.yaml").dataset("schuldhulp")
    assert dataset is not None
    assert dataset.columns["wijk"].keys == ("WK01", "WK02")
    assert dataset.source.path == str(tmp_path / "data" / "schuldhulp.csv")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("privacy_unit: client_id", "privacy_unit: bsn"), "privacy_unit 'bsn'"),
        (("lower: 0, upper: 100000", "lower: 5, upper: 1"), "lower must be below upper"),
        (("lower: 0, upper: 100000", "lower: 0"), "both lower and upper"),
        (("max_contributions: 2", "max_contributions: 0"), "max_contributions"),
        (("kind: csv", "kind: excel"), "source.kind"),
        (("type: float", "type: money"), "type"),
        (("schuldhulp:", "Schuld Hulp:"), "datasets"),
        (("{file: wijken.txt}", "{file: missing.txt}"), "cannot read public_keys file"),
        (("description: Schuldhulpverlening (CSV export)", "colour: blue"), "colour"),
    ],
)
def test_invalid_catalogs_name_the_problem(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    (tmp_path / "wijken.txt").write_text("WK01\n")
    (tmp_path / "catalog.yaml").write_text(OWN_CATALOG.replace(*change))
    with pytest.raises(CatalogError, match=message):
        load_catalog(tmp_path / "catalog.yaml")


def test_unreadable_or_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "absent.yaml")
    (tmp_path / "bad.yaml").write_text("datasets: [unclosed")
    with pytest.raises(CatalogError, match="not valid YAML"):
        load_catalog(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(CatalogError, match="mapping"):
        load_catalog(tmp_path / "list.yaml")


@pytest.mark.parametrize(("bounds", "decimals"), [("lower: 0, upper: 0.125", 2), ("lower: 0, upper: 120.5", 0)])
def test_bounds_off_the_fixed_point_grid_are_refused(tmp_path: Path, bounds: str, decimals: int) -> None:
    (tmp_path / "wijken.txt").write_text("WK01\n")
    (tmp_path / "catalog.yaml").write_text(
        OWN_CATALOG.replace("lower: 0, upper: 100000", f"{bounds}, decimals: {decimals}")
    )
    with pytest.raises(CatalogError, match="multiple of"):
        load_catalog(tmp_path / "catalog.yaml")


def test_an_empty_public_key_list_is_refused(tmp_path: Path) -> None:
    (tmp_path / "catalog.yaml").write_text(OWN_CATALOG.replace("public_keys: {file: wijken.txt}", "public_keys: []"))
    with pytest.raises(CatalogError, match="public_keys is empty"):
        load_catalog(tmp_path / "catalog.yaml")
