"""Verified snapshots: a record decides nothing but its own row, and every query is one statement."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gateway.data.catalog import DatasetSpec, load_catalog
from gateway.data.relations import snapshot_relation
from gateway.data.snapshots import IngestionFailed, SnapshotStore, planted_bug_skip_bounding
from gateway.data.sources import DuckDBSource
from gateway.query.compile import compile_statistics
from gateway.query.sql_frontend import parse_sql
from gateway.query.statistics import plan_statistics

SEED = bytes(range(32))
CATALOG = """
datasets:
  payments:
    source: {{kind: {kind}, path: payments.{kind}}}
    privacy_unit: person
    max_contributions: 3
    columns:
      person: {{type: string, kind: identifier}}
      wijk: {{type: string, public_keys: [A, B]}}
      amount: {{type: float, kind: sensitive, lower: 0, upper: 1000, decimals: 2}}
"""
BASE = ["p1,A,10.5", "p2,A,20.25", "p3,B,999.99"]


def _csv(directory: Path, lines: list[str], header: str = "person,wijk,amount") -> DatasetSpec:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "payments.csv").write_bytes(("\n".join([header, *lines]) + "\n").encode("utf-8", "surrogateescape"))
    (directory / "catalog.yaml").write_text(CATALOG.format(kind="csv"))
    dataset = load_catalog(directory / "catalog.yaml").dataset("payments")
    assert dataset is not None
    return dataset


def _store(directory: Path) -> SnapshotStore:
    return SnapshotStore(directory / "snapshots", SEED)


def _rows(store: SnapshotStore) -> list[tuple[object, ...]]:
    snapshot = store.current("payments")
    assert snapshot is not None
    return sorted(DuckDBSource().fetch_all(f"SELECT * FROM read_parquet('{snapshot.path}')"), key=str)


def _count(store: SnapshotStore, dataset: DatasetSpec, sql: str = "SELECT wijk, COUNT(*) FROM payments GROUP BY wijk"):  # type: ignore[no-untyped-def]
    snapshot = store.current("payments")
    assert snapshot is not None
    plan = parse_sql(sql)
    compiled = compile_statistics(
        plan, dataset, plan_statistics(plan, dataset), relation=snapshot_relation(str(snapshot.path))
    )
    return compiled.sql, sorted(DuckDBSource().fetch_all(compiled.sql))


@pytest.mark.parametrize(
    "bad_line",
    [
        "p9,A,1.0,one field too many",
        'p9,"A,1.0',  # an unclosed quote: before, the reader failed for every query (503 instead of 200)
        "p9,A",
        "p9,\udcff\udcfe,1.0",  # bytes that are not UTF-8: the value becomes NULL, the row stays
    ],
)
def test_one_malformed_csv_line_changes_only_its_own_row(tmp_path: Path, bad_line: str) -> None:
    without = _csv(tmp_path / "without", BASE)
    with_bad = _csv(tmp_path / "with", [*BASE[:2], bad_line, BASE[2]])
    store_without, store_with = _store(tmp_path / "without"), _store(tmp_path / "with")
    store_without.ensure("payments", without)
    report = store_with.ensure("payments", with_bad)
    assert report is not None
    assert report.rows_read == 4
    kept = [row for row in _rows(store_with) if row[0] == "p9"]
    assert [row for row in _rows(store_with) if row[0] != "p9"] == _rows(store_without)
    if "\udcff" in bad_line:
        assert kept == [("p9", None, 1.0)]
        assert report.values_nulled == {"wijk": 1}
    else:
        assert kept == []
        assert report.rows_rejected == 1


def test_csv_is_read_with_the_declared_dialect_not_a_guessed_one(tmp_path: Path) -> None:
    directory = tmp_path / "semicolons"
    directory.mkdir()
    (directory / "payments.csv").write_text('person;wijk;amount\np1;A;"10,5"\np2;B;7\n')
    (directory / "catalog.yaml").write_text(
        CATALOG.format(kind="csv").replace("path: payments.csv}", "path: payments.csv, delimiter: ';'}")
    )
    dataset = load_catalog(directory / "catalog.yaml").dataset("payments")
    assert dataset is not None
    store = _store(directory)
    report = store.ensure("payments", dataset)
    assert report is not None
    assert report.values_nulled == {"amount": 1}
    assert _rows(store) == [("p1", "A", None), ("p2", "B", 7.0)]


def test_a_parquet_string_that_is_not_utf8_becomes_null_instead_of_failing_every_query(tmp_path: Path) -> None:
    (tmp_path / "catalog.yaml").write_text(CATALOG.format(kind="parquet"))
    names = pa.array([b"A", b"\xff\xfe", b"B"], type=pa.binary()).view(pa.string())
    pq.write_table(
        pa.table({"person": ["p1", "p2", "p3"], "wijk": names, "amount": [1.0, 2.0, 3.0]}),
        tmp_path / "payments.parquet",
    )
    dataset = load_catalog(tmp_path / "catalog.yaml").dataset("payments")
    assert dataset is not None
    store = _store(tmp_path)
    report = store.ensure("payments", dataset)
    assert report is not None
    assert report.values_nulled == {"wijk": 1}
    assert _rows(store) == [("p1", "A", 1.0), ("p2", None, 2.0), ("p3", "B", 3.0)]
    _, counts = _count(store, dataset)
    assert counts == [("A", 1), ("B", 1)]


def test_a_unit_beyond_max_contributions_is_bounded_at_ingestion_and_the_statement_is_the_same(tmp_path: Path) -> None:
    """Before, a file holding such a unit made every query take a slower, bounding statement (13 ms
    against 1,041 ms on 891k rows): one query told D from D'. Now D and D' compile to one statement."""
    within = _csv(tmp_path / "d", BASE)
    beyond = _csv(tmp_path / "d_prime", [*BASE, *["p4,B,5.0"] * 4])  # p4: one row more than allowed
    store_d, store_d_prime = _store(tmp_path / "d"), _store(tmp_path / "d_prime")
    store_d.ensure("payments", within)
    report = store_d_prime.ensure("payments", beyond)
    assert report is not None
    assert (report.units_bounded, report.rows_bounded_away, report.rows) == (1, 1, 6)
    sql_d, counts_d = _count(store_d, within)
    sql_d_prime, counts_d_prime = _count(store_d_prime, beyond)
    snapshot_d, snapshot_d_prime = store_d.current("payments"), store_d_prime.current("payments")
    assert snapshot_d is not None
    assert snapshot_d_prime is not None
    assert sql_d.replace(str(snapshot_d.path), "SNAPSHOT") == sql_d_prime.replace(
        str(snapshot_d_prime.path), "SNAPSHOT"
    )
    assert "row_number" not in sql_d
    assert "random()" not in sql_d
    assert counts_d == [("A", 2), ("B", 1)]
    assert counts_d_prime == [("A", 2), ("B", 4)]  # 1 + exactly max_contributions


def test_the_planted_bug_switch_leaves_units_unbounded(tmp_path: Path) -> None:
    beyond = _csv(tmp_path, [*BASE, *["p4,B,5.0"] * 4])
    store = _store(tmp_path)
    with planted_bug_skip_bounding():
        store.ingest("payments", beyond)
    assert _count(store, beyond)[1] == [("A", 2), ("B", 5)]
    store.ingest("payments", beyond)
    assert _count(store, beyond)[1] == [("A", 2), ("B", 4)]


def test_which_rows_a_unit_keeps_depends_on_its_own_rows_and_the_seed_only(tmp_path: Path) -> None:
    heavy = [f"p4,B,{value}" for value in range(1, 11)]
    alone = _csv(tmp_path / "alone", heavy)
    crowded = _csv(tmp_path / "crowded", [*BASE, *heavy[:5], "p7,A,3.0", *heavy[5:]])
    kept = {}
    for name, dataset in (("alone", alone), ("crowded", crowded)):
        store = _store(tmp_path / name)
        store.ensure("payments", dataset)
        kept[name] = [row for row in _rows(store) if row[0] == "p4"]
    assert len(kept["alone"]) == 3
    assert kept["alone"] == kept["crowded"]
    choices = set()
    for seed in range(8):
        store = SnapshotStore(tmp_path / "alone" / f"seed{seed}", bytes([seed] * 32))
        store.ensure("payments", alone)
        choices.add(tuple(row[2] for row in _rows(store) if row[0] == "p4"))
    assert len(choices) > 1  # the seed, not the data, decides


def test_rows_without_a_unit_are_dropped_at_ingestion(tmp_path: Path) -> None:
    dataset = _csv(tmp_path, [*BASE, ",A,5.0", ",B,6.0"])
    store = _store(tmp_path)
    report = store.ensure("payments", dataset)
    assert report is not None
    assert report.rows_without_unit == 2
    assert _count(store, dataset)[1] == [("A", 2), ("B", 1)]


def test_a_snapshot_is_named_by_the_file_version_and_the_catalog_entry(tmp_path: Path) -> None:
    """The verified-file cache was keyed by the dataset's name alone: a catalog change at run time would
    have kept answering from what was verified for the old entry."""
    dataset = _csv(tmp_path, [*BASE, "p1,A,1.0", "p1,A,1.0"])
    store = _store(tmp_path)
    assert store.ensure("payments", dataset) is not None
    assert store.ensure("payments", dataset) is None  # current: nothing to do
    stricter = dataset.model_copy(update={"max_contributions": 1})
    assert not store.is_current("payments", stricter)
    report = store.ensure("payments", stricter)
    assert report is not None
    assert report.units_bounded == 1
    # A same-size replacement with the modification time set back is still a new version.
    path = tmp_path / "payments.csv"
    before = os.stat(path)
    path.write_text(path.read_text().replace("p3,B,999.99", "p1,B,999.99"))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(path).st_size == before.st_size
    assert not store.is_current("payments", stricter)


def test_snapshots_are_private_files_in_a_private_directory(tmp_path: Path) -> None:
    dataset = _csv(tmp_path, BASE)
    store = _store(tmp_path)
    store.ensure("payments", dataset)
    snapshot = store.current("payments")
    assert snapshot is not None
    assert stat.S_IMODE(os.stat(store.directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(snapshot.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.directory / "payments.json").st_mode) == 0o600
    assert not list(store.directory.glob(".staging-*"))


def test_a_truncated_snapshot_is_not_current(tmp_path: Path) -> None:
    dataset = _csv(tmp_path, BASE)
    store = _store(tmp_path)
    store.ensure("payments", dataset)
    snapshot = store.current("payments")
    assert snapshot is not None
    with snapshot.path.open("r+b") as handle:
        handle.truncate(10)
    assert store.current("payments") is None


@pytest.mark.parametrize("content", [None, b"PAR1 but not really a parquet file", b""])
def test_a_missing_or_unreadable_parquet_file_fails_ingestion_as_a_whole(tmp_path: Path, content: bytes | None) -> None:
    (tmp_path / "catalog.yaml").write_text(CATALOG.format(kind="parquet"))
    if content is not None:
        (tmp_path / "payments.parquet").write_bytes(content)
    dataset = load_catalog(tmp_path / "catalog.yaml").dataset("payments")
    assert dataset is not None
    store = _store(tmp_path)
    with pytest.raises(IngestionFailed):
        store.ensure("payments", dataset)
    assert store.current("payments") is None


def test_a_csv_without_a_catalog_column_fails_ingestion(tmp_path: Path) -> None:
    dataset = _csv(tmp_path, ["p1,A"], header="person,wijk")
    with pytest.raises(IngestionFailed, match="lacks"):
        _store(tmp_path).ensure("payments", dataset)


def test_a_short_seed_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        SnapshotStore(tmp_path, b"short")


def test_a_running_gateway_sees_a_snapshot_made_by_another_process(tmp_path: Path) -> None:
    dataset = _csv(tmp_path, [*BASE, "p1,A,1.0", "p1,A,1.0"])
    serving, command = _store(tmp_path), _store(tmp_path)  # the gateway's store, and the CLI's
    serving.ensure("payments", dataset)
    first = serving.current("payments")
    stricter = dataset.model_copy(update={"max_contributions": 1})
    command.ensure("payments", stricter)
    second = serving.current("payments")
    assert first is not None
    assert second is not None
    assert second.key != first.key
    assert first.path.exists()  # the previous snapshot stays for a query planned on it


def test_an_unreachable_database_is_refused_before_anything_is_spent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.data.sources import Sources
    from gateway.exceptions import SourceUnavailable

    (tmp_path / "catalog.yaml").write_text(
        CATALOG.format(kind="csv").replace(
            "source: {kind: csv, path: payments.csv}", "source: {kind: postgresql, table: payments, url_env: DP_GONE}"
        )
    )
    monkeypatch.setenv("DP_GONE", "postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")
    dataset = load_catalog(tmp_path / "catalog.yaml").dataset("payments")
    assert dataset is not None
    sources = Sources()
    with pytest.raises(SourceUnavailable):
        sources.relation_for("payments", dataset)
    sources.close()


def test_a_quoted_field_may_span_lines_and_is_one_record(tmp_path: Path) -> None:
    """Read line by line, one person's remark with line breaks became rows of other people."""
    forged = 'p9,"a remark\nv0,A,1000\nv1,A,1000\nend",5'
    dataset = _csv(tmp_path, [*BASE, forged])
    store = _store(tmp_path)
    report = store.ensure("payments", dataset)
    assert report is not None
    assert report.records_spanning_lines == 1
    assert report.rows_rejected == 0
    assert [row[0] for row in _rows(store)] == ["p1", "p2", "p3", "p9"]


def test_an_unclosed_quote_spoils_only_its_own_line(tmp_path: Path) -> None:
    dataset = _csv(tmp_path, ['p9,"A,1.0', *BASE])
    store = _store(tmp_path)
    report = store.ensure("payments", dataset)
    assert report is not None
    assert report.rows_rejected == 1
    assert [row[0] for row in _rows(store)] == ["p1", "p2", "p3"]


def test_a_header_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    dataset = _csv(tmp_path, BASE, header="\ufeffperson,wijk,amount")
    store = _store(tmp_path)
    store.ensure("payments", dataset)
    assert len(_rows(store)) == 3


def test_a_unit_must_be_written_in_its_canonical_form(tmp_path: Path) -> None:
    (tmp_path / "catalog.yaml").write_text(
        CATALOG.format(kind="csv").replace(
            "person: {type: string, kind: identifier}", "person: {type: integer, kind: identifier}"
        )
    )
    (tmp_path / "payments.csv").write_text("person,wijk,amount\n7,A,1\n007,A,2\n8,B,3\n")
    dataset = load_catalog(tmp_path / "catalog.yaml").dataset("payments")
    assert dataset is not None
    store = _store(tmp_path)
    report = store.ensure("payments", dataset)
    assert report is not None
    assert report.rows_without_unit == 1
    assert _rows(store) == [(7, "A", 1.0), (8, "B", 3.0)]


def _parquet(tmp_path: Path, table: pa.Table) -> DatasetSpec:
    (tmp_path / "catalog.yaml").write_text(CATALOG.format(kind="parquet"))
    pq.write_table(table, tmp_path / "payments.parquet")
    dataset = load_catalog(tmp_path / "catalog.yaml").dataset("payments")
    assert dataset is not None
    return dataset


def test_parquet_values_of_any_plain_type_never_fail_the_file(tmp_path: Path) -> None:
    """Invalid UTF-8 inside a dictionary or a string view, and a timestamp beyond any date, failed the
    whole ingestion (every query 503) where the file without that one value ingested."""
    bad = pa.array([b"A", b"\xff", b"B"], type=pa.binary()).view(pa.string())
    table = pa.table(
        {
            "person": pa.array(["p1", "p2", "p3"]).cast(pa.string_view()),
            "wijk": bad.dictionary_encode(),
            "amount": pa.array([1.5, 2.5, 3.5]),
            "when": pa.array([0, 2**62, -(2**62)], type=pa.timestamp("ms")),
        }
    )
    catalog = CATALOG.format(kind="parquet") + "      when: {type: date}\n"
    (tmp_path / "catalog.yaml").write_text(catalog)
    pq.write_table(table, tmp_path / "payments.parquet")
    dataset = load_catalog(tmp_path / "catalog.yaml").dataset("payments")
    assert dataset is not None
    store = _store(tmp_path)
    report = store.ensure("payments", dataset)
    assert report is not None
    assert report.values_nulled == {"wijk": 1}
    rows = _rows(store)
    assert [row[:3] for row in rows] == [("p1", "A", 1.5), ("p2", None, 2.5), ("p3", "B", 3.5)]
    assert [row[3] for row in rows][1:] == [None, None]


def test_a_parquet_column_of_a_nested_type_refuses_the_file_from_its_schema(tmp_path: Path) -> None:
    dataset = _parquet(tmp_path, pa.table({"person": ["p1"], "wijk": pa.array([["A"]]), "amount": pa.array([1.0])}))
    with pytest.raises(IngestionFailed, match="nested"):
        _store(tmp_path).ensure("payments", dataset)


def test_a_query_never_reads_a_snapshot_made_under_another_catalog_entry(tmp_path: Path) -> None:
    """The snapshot of max_contributions 3 answered for a catalog saying 1 (noise for one row, five
    times the privacy loss) when re-ingestion failed, or another process ingested under another catalog."""
    from gateway.data.sources import Sources
    from gateway.exceptions import SourceUnavailable

    dataset = _csv(tmp_path, [*BASE, "p1,A,1.0", "p1,A,1.0"])
    store = _store(tmp_path)
    store.ensure("payments", dataset)
    sources = Sources(snapshots=store)
    assert sources.relation_for("payments", dataset).bounded
    stricter = dataset.model_copy(update={"max_contributions": 1})
    (tmp_path / "payments.csv").unlink()  # and re-ingestion fails
    with pytest.raises(IngestionFailed):
        store.ensure("payments", stricter)
    with pytest.raises(SourceUnavailable):
        sources.relation_for("payments", stricter)
    sources.close()


def test_a_snapshot_made_with_the_planted_bug_is_never_current(tmp_path: Path) -> None:
    dataset = _csv(tmp_path, BASE)
    store = _store(tmp_path)
    with planted_bug_skip_bounding():
        store.ensure("payments", dataset)
    assert store.current_for("payments", dataset) is None
    assert store.ensure("payments", dataset) is not None  # ingested again, for real
