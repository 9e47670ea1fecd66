"""The synthetic Voorbeeldstad: deterministic, valid BSNs, linked records."""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import pytest

from gateway.demo.generator import bsn_is_valid, generate


def _one(sql: str) -> tuple[object, ...] | None:
    return duckdb.connect().execute(sql).fetchone()


def _digests(directory: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(directory.iterdir())}


def test_the_same_seed_gives_identical_files(tmp_path: Path) -> None:
    generate(tmp_path / "a", residents=1500, seed=7)
    generate(tmp_path / "b", residents=1500, seed=7)
    generate(tmp_path / "c", residents=1500, seed=8)
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert _digests(tmp_path / "a")["residents.parquet"] != _digests(tmp_path / "c")["residents.parquet"]


def test_residents_have_unique_valid_bsns_and_the_promised_columns(demo_dir: Path) -> None:
    residents = duckdb.sql(f"SELECT * FROM read_parquet('{demo_dir / 'residents.parquet'}')")
    assert residents.columns == [
        "person_id", "bsn", "naam", "birth_year", "sex", "wijk", "buurt", "pc6", "household_type", "income",
    ]  # fmt: skip
    rows = residents.fetchall()
    bsns = [row[1] for row in rows]
    assert len(set(bsns)) == len(bsns)
    assert all(bsn_is_valid(bsn) for bsn in bsns)
    assert all(len(row[7]) == 6 and row[7][:4].isdigit() for row in rows)
    assert all(row[6].startswith("BU" + row[5][2:]) for row in rows)  # buurt lies in its wijk


def test_social_domain_records_link_to_residents(demo_dir: Path) -> None:
    for dataset in ("bijstand", "jeugdzorg", "wmo", "woninginbraak"):
        orphans = _one(
            f"SELECT COUNT(*) FROM read_parquet('{demo_dir / dataset}.parquet') d "
            f"ANTI JOIN read_parquet('{demo_dir / 'residents.parquet'}') r USING (person_id)"
        )
        total = _one(f"SELECT COUNT(*) FROM read_parquet('{demo_dir / dataset}.parquet')")
        assert orphans == (0,)
        assert total is not None
        assert int(total[0]) > 0  # type: ignore[call-overload]


def test_records_respect_the_catalogs_max_contributions(demo_dir: Path) -> None:
    from gateway.data.catalog import load_catalog

    catalog = load_catalog(demo_dir / "catalog.yaml")
    for name, dataset in catalog.datasets.items():
        if dataset.public:
            continue
        most = _one(
            f"SELECT max(n) FROM (SELECT COUNT(*) AS n FROM read_parquet('{dataset.source.path}') "
            f"GROUP BY {dataset.privacy_unit})"
        )
        assert most is not None
        assert int(most[0]) <= dataset.max_contributions, name  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("bsn", "valid"),
    [
        ("111222333", True),
        ("123456782", True),
        ("123456789", False),
        ("12345678", False),
        ("000000000", False),
        ("12345678a", False),
    ],
)
def test_the_eleven_test(bsn: str, valid: bool) -> None:
    assert bsn_is_valid(bsn) is valid


def test_at_least_one_resident(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        generate(tmp_path, residents=0)
