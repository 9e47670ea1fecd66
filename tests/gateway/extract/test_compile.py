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
from gateway.data.catalog import DatasetSpec
from gateway.data.sources import Sources
from gateway.extract.compile import compile_extract, output_columns
from gateway.query.json_frontend import Comparison, condition_expression

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
                "cat": {"type": "string", "kind": "sensitive", "public_keys": ["a", "b", "c"]},
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


def _reference(
    records: list[tuple[Any, ...]],
    k: int,
    l: int,  # noqa: E741
    columns: list[str],
) -> list[tuple[Any, ...]]:
    """The records an extract of ``columns`` must release, computed record by record in Python: classes
    over every quasi-identifier of the profile (generalised), of persons (by their records' multiset) when
    the unit is released, else of records; at least k persons and l values of ``cat`` per class."""
    released = [name for name in columns if name != "unit"]
    quasi = sorted(RULES)
    kept: list[tuple[Any, ...]] = []
    people: dict[Any, list[tuple[Any, ...]]] = defaultdict(list)
    for record in records:
        if record[0] is not None:
            people[record[0]].append(record)

    def key(record: tuple[Any, ...]) -> tuple[Any, ...]:
        values = dict(zip(COLUMNS, record, strict=True))
        generalised = [RULES[name].apply(values[name]) for name in quasi]
        return tuple((value is None, value or "") for value in generalised)

    def row(record: tuple[Any, ...]) -> tuple[Any, ...]:
        values = dict(zip(COLUMNS, record, strict=True))
        return (record[0], *[RULES[name].apply(values[name]) if name in RULES else values[name] for name in released])

    if "unit" in columns:
        signature = {person: tuple(sorted(key(record) for record in own)) for person, own in people.items()}
        members: dict[tuple[Any, ...], set[Any]] = defaultdict(set)
        values: dict[tuple[Any, ...], set[Any]] = defaultdict(set)
        for person, own in people.items():
            members[signature[person]].add(person)
            values[signature[person]].update(record[4] for record in own)
        for person, own in people.items():
            if len(members[signature[person]]) >= k and len(values[signature[person]]) >= l:
                kept += [row(record) for record in own]
        return kept
    units: dict[tuple[Any, ...], set[Any]] = defaultdict(set)
    categories: dict[tuple[Any, ...], set[Any]] = defaultdict(set)
    for own in people.values():
        for record in own:
            units[key(record)].add(record[0])
            categories[key(record)].add(record[4])
    return [
        row(record)
        for own in people.values()
        for record in own
        if len(units[key(record)]) >= k and len(categories[key(record)]) >= l
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
    diverse = ("cat", l) if l > 1 else None  # the profile's l-diversity holds whether or not cat is asked for
    compiled = compile_extract(dataset, output_columns(dataset, chosen), None, k=k, diverse=diverse)
    sources = Sources()
    try:
        summary = next(sources.stream("t", dataset, compiled.summary_sql))[0]
        output = [row for batch in sources.stream("t", dataset, compiled.stream_sql) for row in batch]
    finally:
        sources.close()
    expected = _reference(records, k, l, chosen)
    assert Counter(map(tuple, output)) == Counter(expected)
    with_units = sum(1 for record in records if record[0] is not None)
    assert (int(summary[0]), int(summary[1])) == (len(expected), with_units - len(expected))
    released = [name for name in chosen if name != "unit"]
    keys = [1 + released.index(name) for name in released if name in RULES]
    sensitive = 1 + released.index("cat") if "cat" in released else None
    assert small_classes(output, quasi_identifiers=keys, unit=0, k=k, sensitive=sensitive,
                         l_diversity=l if sensitive else 1) == {}  # fmt: skip
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
