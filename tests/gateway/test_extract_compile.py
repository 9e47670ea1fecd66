"""The extract SQL against a reference computed in Python: generalisation as ``Rule.apply`` does it, and
exactly the records of classes with at least k persons (and l sensitive values) released, on DuckDB
(Parquet) and PostgreSQL sources alike."""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from anonymization import Rule, small_classes
from gateway.catalog import DatasetSpec
from gateway.extract.compile import compile_extract, output_columns
from gateway.query.json_frontend import Comparison, condition_expression
from gateway.sources import Sources

COLUMNS = ["unit", "age", "pc", "day", "cat", "amount"]
RULES = {"age": Rule.parse("band:5"), "pc": Rule.parse("prefix:2"), "day": Rule.parse("month")}
URL_ENV = "DATAPOORT_TEST_EXTRACT_SOURCE"


def _dataset(source: dict[str, Any]) -> DatasetSpec:
    return DatasetSpec.model_validate(
        {
            "source": source,
            "privacy_unit": "unit",
            "actions": ["export"],
            "columns": {
                "unit": {"type": "string", "kind": "identifier"},
                "age": {"type": "integer", "kind": "quasi_identifier", "generalise": "band:5"},
                "pc": {"type": "string", "kind": "quasi_identifier", "generalise": "prefix:2"},
                "day": {"type": "date", "kind": "quasi_identifier", "generalise": "month"},
                "cat": {"type": "string", "kind": "sensitive"},
                "amount": {"type": "integer", "kind": "attribute"},
            },
            "exports": {"test": {"columns": COLUMNS}},
        }
    )


_RECORD = st.tuples(
    st.one_of(st.none(), st.sampled_from([f"u{index}" for index in range(12)])),
    st.one_of(st.none(), st.integers(-12, 130)),
    st.one_of(st.none(), st.sampled_from(["1234AB", "1299ZZ", "12", "9", "ÄÖ12", ""])),
    st.one_of(st.none(), st.dates(date(2024, 11, 1), date(2025, 2, 28))),
    st.sampled_from(["a", "b", "c"]),
    st.integers(-5, 5),
)


@pytest.fixture(params=["duckdb", pytest.param("postgresql", marks=pytest.mark.postgres)])
def source(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Any]]:
    if request.param == "duckdb":
        path = tmp_path / "records.parquet"

        def write_parquet(records: list[tuple[Any, ...]]) -> dict[str, Any]:
            schema = pa.schema([("unit", pa.string()), ("age", pa.int64()), ("pc", pa.string()), ("day", pa.date32()),
                                ("cat", pa.string()), ("amount", pa.int64())])  # fmt: skip
            pq.write_table(
                pa.Table.from_pylist([dict(zip(COLUMNS, row, strict=True)) for row in records], schema), path
            )
            return {"kind": "parquet", "path": str(path)}

        yield "duckdb", write_parquet
        return
    url = request.getfixturevalue("postgres_schema_url")
    monkeypatch.setenv(URL_ENV, url)
    engine = create_engine(url)

    def write_table(records: list[tuple[Any, ...]]) -> dict[str, Any]:
        with engine.begin() as connection:
            connection.execute(text("DROP TABLE IF EXISTS records"))
            connection.execute(
                text("CREATE TABLE records (unit text, age bigint, pc text, day date, cat text, amount bigint)")
            )
            if records:
                connection.execute(
                    text("INSERT INTO records VALUES (:unit, :age, :pc, :day, :cat, :amount)"),
                    [dict(zip(COLUMNS, row, strict=True)) for row in records],
                )
        return {"kind": "postgresql", "table": "records", "url_env": URL_ENV}

    yield "postgresql", write_table
    engine.dispose()


def _reference(records: list[tuple[Any, ...]], k: int, l: int, columns: list[str]) -> list[tuple[Any, ...]]:  # noqa: E741
    """The records an extract of ``columns`` must release: generalised, in classes of >= k units."""
    released = [name for name in columns if name != "unit"]
    keys = [name for name in released if name in RULES]
    rows = []
    for record in records:
        if record[0] is None:
            continue
        values = dict(zip(COLUMNS, record, strict=True))
        rows.append(
            (record[0], *[RULES[name].apply(values[name]) if name in RULES else values[name] for name in released])
        )
    units: dict[tuple[Any, ...], set[Any]] = defaultdict(set)
    sensitive: dict[tuple[Any, ...], set[Any]] = defaultdict(set)
    for row in rows:
        key = tuple(row[1 + released.index(name)] for name in keys)
        units[key].add(row[0])
        if "cat" in released:
            sensitive[key].add(row[1 + released.index("cat")])
    return [
        row
        for row in rows
        if len(units[key := tuple(row[1 + released.index(name)] for name in keys)]) >= k
        and ("cat" not in released or len(sensitive[key]) >= l)
    ]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    records=st.lists(_RECORD, max_size=60),
    k=st.integers(2, 4),
    l=st.integers(1, 3),
    columns=st.lists(st.sampled_from(COLUMNS[1:]), min_size=1, max_size=5, unique=True),
    with_unit=st.booleans(),
)
def test_property_exactly_the_k_anonymous_records_are_released(
    source: tuple[str, Any],
    records: list[tuple[Any, ...]],
    k: int,
    l: int,  # noqa: E741
    columns: list[str],
    with_unit: bool,
) -> None:
    kind, write = source
    dataset = _dataset(write(records))
    chosen = ["unit", *columns] if with_unit else columns
    compiled = compile_extract(dataset, output_columns(dataset, chosen), None, k=k,
                               diverse=("cat", l) if "cat" in columns and l > 1 else None)  # fmt: skip
    sources = Sources()
    try:
        summary = next(sources.stream("t", dataset, compiled.summary_sql))[0]
        output = [row for batch in sources.stream("t", dataset, compiled.stream_sql) for row in batch]
    finally:
        sources.close()
    expected = _reference(records, k, l if "cat" in columns else 1, chosen)
    assert Counter(map(tuple, output)) == Counter(expected)
    with_units = sum(1 for record in records if record[0] is not None)
    assert (int(summary[0]), int(summary[1])) == (len(expected), with_units - len(expected))
    released = [name for name in chosen if name != "unit"]
    keys = [1 + released.index(name) for name in released if name in RULES]
    diverse = 1 + released.index("cat") if "cat" in released else None
    assert small_classes(output, quasi_identifiers=keys, unit=0, k=k, sensitive=diverse,
                         l_diversity=l if diverse else 1) == {}  # fmt: skip
    del kind


def test_a_filter_selects_before_classes_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "records.parquet"
    rows = [{"unit": f"u{index}", "age": 30, "pc": "1234AB", "day": date(2025, 1, 1), "cat": "a", "amount": index}
            for index in range(6)]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), path)
    dataset = _dataset({"kind": "parquet", "path": str(path)})
    condition = condition_expression(Comparison(column="amount", op=">=", value=3))
    compiled = compile_extract(dataset, output_columns(dataset, ["unit", "age"]), condition, k=3)
    sources = Sources()
    try:
        output = [row for batch in sources.stream("t", dataset, compiled.stream_sql) for row in batch]
        assert sorted(output) == [("u3", "30-34"), ("u4", "30-34"), ("u5", "30-34")]
        strict = compile_extract(dataset, output_columns(dataset, ["unit", "age"]), condition, k=4)
        assert list(sources.stream("t", dataset, strict.stream_sql)) == []
    finally:
        sources.close()
    assert os.path.exists(path)
