"""An extract specification as SQL for its source: generalisation and k-anonymity pushed down.

Two statements read the source. The *summary* counts the equivalence classes and how many records fall
in classes too small to release, so that the response headers and the authorising audit event can state
them before the first byte leaves. The *stream* returns the released records, computing the classes
again in the same statement.

Classes are formed over every quasi-identifier any export profile of the dataset releases (see
``class_columns``), generalised, and count distinct persons, not rows. Without the privacy unit in the
extract each record is its own member; with it, a person's records are linked, so a class is of persons
whose records carry the same multiset of values. Keys are (is null, text) pairs, injective and
hash-joinable on DuckDB and PostgreSQL alike. Every count is a plain aggregate, so the source spills to
disk rather than hold the data. The privacy unit leaves as ``__unit`` and is pseudonymised by the
gateway; rows without one are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from anonymization import Rule
from gateway.data.catalog import DatasetSpec
from gateway.data.relations import (
    ident,
    quoted_condition,
    source_dialect,
    source_relation,
    string_literal,
    typed_projection,
)

UNIT = "__unit"


@dataclass(frozen=True, slots=True)
class OutputColumn:
    name: str
    """As the partner sees it: the privacy unit's column is ``<name>_pseudonym``."""
    source: str
    type: str
    """The catalog type, or ``string`` once generalised."""
    rule: Rule | None
    is_unit: bool
    is_quasi_identifier: bool


@dataclass(frozen=True, slots=True)
class CompiledExtract:
    columns: tuple[OutputColumn, ...]
    summary_sql: str
    """One row: records released, records suppressed, classes released."""
    stream_sql: str
    """``__unit`` first, then one column per output column that is not the unit."""


def _generalised(column: str, rule: Rule, dialect: str) -> str:
    value = ident(column, dialect)
    if rule.kind == "band":
        width = rule.size
        lower = f"({value} - ((({value} % {width}) + {width}) % {width}))"  # floor, for negatives too
        return f"CAST({lower} AS VARCHAR) || '-' || CAST({lower} + {width - 1} AS VARCHAR)"
    if rule.kind == "prefix":
        return f"substr({value}, 1, {rule.size})"
    pattern = {"month": ("%Y-%m", "YYYY-MM"), "year": ("%Y", "YYYY")}[rule.kind]
    if dialect == "duckdb":
        return f"strftime({value}, '{pattern[0]}')"
    return f"to_char({value}, '{pattern[1]}')"


def output_columns(dataset: DatasetSpec, names: list[str]) -> tuple[OutputColumn, ...]:
    columns = []
    for name in names:
        spec = dataset.columns[name]
        is_unit = name == dataset.unit
        rule = spec.rule if spec.kind == "quasi_identifier" and not is_unit else None
        columns.append(
            OutputColumn(
                name=f"{name}_pseudonym" if is_unit else name,
                source=name,
                type="string" if rule is not None or is_unit else spec.type,
                rule=rule,
                is_unit=is_unit,
                is_quasi_identifier=spec.kind == "quasi_identifier" and not is_unit,
            )
        )
    return tuple(columns)


def class_columns(dataset: DatasetSpec) -> list[str]:
    """The quasi-identifiers every extract of ``dataset`` is made k-anonymous over: each one any export
    profile of the dataset releases, whether or not this extract asks for it. One partner's extracts of
    a dataset share pseudonyms, so joined together they must not make a class smaller than any alone."""
    profiled = {name for profile in dataset.exports.values() for name in profile.columns}
    return sorted(
        name for name in profiled if dataset.columns[name].kind == "quasi_identifier" and name != dataset.unit
    )


def _bit(dataset: DatasetSpec, name: str, dialect: str) -> str:
    keys = dataset.columns[name].keys or ()
    cases = " ".join(f"WHEN {string_literal(key, dialect)} THEN {1 << index}" for index, key in enumerate(keys))
    return f"CAST(CASE CAST({ident(name, dialect)} AS VARCHAR) {cases} ELSE 0 END AS BIGINT)"


def _bit_count(column: str, dialect: str) -> str:
    return f"bit_count({column})" if dialect == "duckdb" else f"bit_count(CAST({column} AS bit(64)))"


def _key_text(index: int) -> str:
    """One quasi-identifier of a record as text that cannot be confused with another value's: null flag,
    length and value."""
    return f"CAST(__n{index} AS INTEGER) || ':' || length(__v{index}) || ':' || __v{index}"


def compile_extract(
    dataset: DatasetSpec,
    columns: tuple[OutputColumn, ...],
    condition: exp.Expression | None,
    *,
    k: int,
    diverse: tuple[str, int] | None = None,
) -> CompiledExtract:
    """``diverse`` (column, l) applies whether or not the column is released. When the privacy unit is
    released, a person's records are linked by their pseudonym, so a *person* is the unit of the classes:
    persons whose records have the same multiset of quasi-identifier values form a class, and a class of
    fewer than k persons is suppressed with all its records. Without the unit, each record is its own."""
    dialect = source_dialect(dataset)
    unit = ident(dataset.unit, dialect)
    quasi = class_columns(dataset)
    needed = {dataset.unit, *(column.source for column in columns), *quasi}
    if diverse is not None:
        needed.add(diverse[0])
    if condition is not None:
        needed |= {str(node.name) for node in condition.find_all(exp.Column)}
    released = [column for column in columns if not column.is_unit]

    def value(name: str) -> str:
        rule = dataset.columns[name].rule if dataset.columns[name].kind == "quasi_identifier" else None
        return _generalised(name, rule, dialect) if rule else ident(name, dialect)

    named = [f"{unit} AS {UNIT}"]
    named += [f"{value(column.source)} AS __c{index}" for index, column in enumerate(released)]
    named += [f"{value(name)} AS __q{index}" for index, name in enumerate(quasi)]
    if diverse is not None:
        named.append(f"{_bit(dataset, diverse[0], dialect)} AS __bit")
    filters = [f"{unit} IS NOT NULL"] + ([f"({quoted_condition(condition, dialect)})"] if condition else [])
    keys = "".join(
        f", __q{index} IS NULL AS __n{index}, coalesce(CAST(__q{index} AS VARCHAR), '') AS __v{index}"
        for index in range(len(quasi))
    )
    ctes = (
        f"typed AS NOT MATERIALIZED (SELECT {typed_projection(dataset, needed, dialect)} "
        f"FROM {source_relation(dataset, dialect)}),\n"
        f"named AS NOT MATERIALIZED (SELECT {', '.join(named)} FROM typed WHERE {' AND '.join(filters)}),\n"
        f"selected AS NOT MATERIALIZED (SELECT named.*{keys} FROM named)"
    )
    key_columns = [name for index in range(len(quasi)) for name in (f"__n{index}", f"__v{index}")]
    linked = any(column.is_unit for column in columns)
    # With l-diversity, the sensitive column's value as one bit of an integer (by its public keys; any
    # other value counts as none), OR-ed per person and per class: distinct values by plain aggregates.
    bits, bits_total, enough = ("", "", f"__units >= {k}")
    if diverse is not None:
        bits, bits_total = ", bit_or(__bit) AS __bits", ", bit_or(__bits) AS __bits"
        enough += f" AND {_bit_count('__bits', dialect)} >= {diverse[1]}"
    if linked:
        # A person's signature: how many records, and the sums of two 64-bit halves of each record's
        # SHA-256 over its injective key text. Equal multisets give equal signatures; different ones
        # collide with probability about 2^-128. Plain sums, unlike an ordered string_agg, spill to disk.
        record_key = " || ',' || ".join(_key_text(index) for index in range(len(quasi))) or "''"
        if dialect == "duckdb":
            halves = [f"CAST('0x' || substr(sha256({record_key}), {start}, 16) AS UBIGINT)" for start in (1, 17)]
        else:
            digest = f"encode(sha256(convert_to({record_key}, 'UTF8')), 'hex')"
            halves = [f"CAST(CAST('x' || substr({digest}, {start}, 16) AS bit(64)) AS bigint)" for start in (1, 17)]
        group = ["__own", "__h1", "__h2"]
        ctes += (
            f",\npersons AS (SELECT {UNIT}, count(*) AS __own, sum({halves[0]}) AS __h1, "
            f"sum({halves[1]}) AS __h2{bits} FROM selected GROUP BY {UNIT})"
        )
        classes = (
            f"classes AS (SELECT __own, __h1, __h2, count(*) AS __units, sum(__own) AS __records{bits_total} "
            "FROM persons GROUP BY __own, __h1, __h2)"
        )
    else:
        group = key_columns
        by = "".join(f"{name}, " for name in key_columns)
        classes = (
            f"classes AS (SELECT {by}count(*) AS __units, sum(__records) AS __records{bits_total} FROM "
            f"(SELECT {by}{UNIT}, count(*) AS __records{bits} FROM selected GROUP BY {by}{UNIT}) AS per_unit"
            + (f" GROUP BY {', '.join(key_columns)})" if key_columns else ")")
        )
    summary_sql = (
        f"WITH {ctes},\n{classes}\n"
        f"SELECT coalesce(sum(__records) FILTER (WHERE {enough}), 0), "
        f"coalesce(sum(__records) FILTER (WHERE NOT ({enough})), 0), count(*) FILTER (WHERE {enough}) FROM classes"
    )
    projection = ", ".join([f"s.{UNIT}"] + [f"s.__c{index}" for index in range(len(released))])
    if linked:
        signature = " AND ".join(f"p.{name} = c.{name}" for name in group)
        qualified = enough.replace("__units", "c.__units").replace("__bits", "c.__bits")
        kept = f"kept AS (SELECT p.{UNIT} FROM persons p JOIN classes c ON {signature} WHERE {qualified})"
        join = f"s.{UNIT} = kept.{UNIT}"
    else:
        kept = f"kept AS (SELECT {', '.join(group) or '1 AS __one'} FROM classes WHERE {enough})"
        join = " AND ".join(f"s.{name} = kept.{name}" for name in group) or "TRUE"
    stream_sql = f"WITH {ctes},\n{classes},\n{kept}\nSELECT {projection} FROM selected s JOIN kept ON {join}"
    return CompiledExtract(columns=columns, summary_sql=summary_sql, stream_sql=stream_sql)
