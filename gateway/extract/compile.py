"""An extract specification as SQL for its source: generalisation and k-anonymity pushed down.

Two statements read the source. The *summary* counts the equivalence classes (records with equal
generalised quasi-identifiers) and how many records fall in classes too small to release, so that the
response headers and the authorising audit event can state them before the first byte leaves. The
*stream* returns the released records: the same selection joined to the classes that hold at least
``k`` distinct persons (and, with l-diversity, ``l`` distinct values of the sensitive column).

Classes count distinct privacy units, not rows: a person with three care records is one person.
Class keys are matched on (is null, text) pairs, which are injective and let both DuckDB and PostgreSQL
hash-join them. The privacy unit itself leaves the source as ``__unit`` and is pseudonymised by the
gateway; rows without one are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from anonymization import Rule
from gateway.catalog import DatasetSpec
from gateway.query.compile import ident, quoted_condition, source_relation, typed_projection

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
        is_unit = name == dataset.privacy_unit
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


def compile_extract(
    dataset: DatasetSpec,
    columns: tuple[OutputColumn, ...],
    condition: exp.Expression | None,
    *,
    k: int,
    diverse: tuple[str, int] | None = None,
) -> CompiledExtract:
    dialect = "postgres" if dataset.source.kind == "postgresql" else "duckdb"
    unit = ident(dataset.privacy_unit, dialect)
    needed = {dataset.privacy_unit, *(column.source for column in columns)}
    if condition is not None:
        needed |= {str(node.name) for node in condition.find_all(exp.Column)}
    released = [column for column in columns if not column.is_unit]
    outputs = [
        _generalised(column.source, column.rule, dialect) if column.rule else ident(column.source, dialect)
        for column in released
    ]
    keys = [index for index, column in enumerate(released) if column.is_quasi_identifier]
    filters = [f"{unit} IS NOT NULL"] + ([f"({quoted_condition(condition, dialect)})"] if condition else [])
    # The outputs are named in one step and their keys derived in the next, so each is computed once.
    ctes = (
        f"typed AS NOT MATERIALIZED (SELECT {typed_projection(dataset, needed, dialect)} "
        f"FROM {source_relation(dataset, dialect)}),\n"
        f"named AS NOT MATERIALIZED (SELECT {unit} AS {UNIT}, "
        + ", ".join([f"{sql} AS __c{index}" for index, sql in enumerate(outputs)] or ["1 AS __none"])
        + f" FROM typed WHERE {' AND '.join(filters)}),\n"
        "selected AS NOT MATERIALIZED (SELECT named.*"
        + "".join(f", __c{index} IS NULL AS __n{index}, coalesce(CAST(__c{index} AS VARCHAR), '') AS __v{index}"
                  for index in keys)
        + " FROM named)"
    )  # fmt: skip
    key_columns = [name for index in keys for name in (f"__n{index}", f"__v{index}")]
    by = "".join(f"{name}, " for name in key_columns)
    # Distinct counts as two plain GROUP BYs (class and unit, then class), which spill to disk beyond the
    # memory limit; a DISTINCT aggregate would hold every class's units in memory at once.
    units = (
        f"SELECT {by}count(*) AS __units, sum(__records) AS __records FROM "
        f"(SELECT {by}{UNIT}, count(*) AS __records FROM selected GROUP BY {by}{UNIT}) AS per_unit"
        + (f" GROUP BY {', '.join(key_columns)}" if key_columns else "")
    )
    enough = f"__units >= {k}"
    if diverse is None:
        classes = f"classes AS ({units})"
    else:
        value = f"__c{next(index for index, column in enumerate(released) if column.source == diverse[0])}"
        values = (
            f"SELECT {by}count({value}) AS __values FROM "
            f"(SELECT {by}{value} FROM selected GROUP BY {by}{value}) AS per_value"
            + (f" GROUP BY {', '.join(key_columns)}" if key_columns else "")
        )
        matched = " AND ".join(f"u.{name} = v.{name}" for name in key_columns) or "TRUE"
        classes = f"classes AS (SELECT u.*, v.__values FROM ({units}) AS u JOIN ({values}) AS v ON {matched})"
        enough += f" AND __values >= {diverse[1]}"
    summary_sql = (
        f"WITH {ctes},\n{classes}\n"
        f"SELECT coalesce(sum(__records) FILTER (WHERE {enough}), 0), "
        f"coalesce(sum(__records) FILTER (WHERE NOT ({enough})), 0), count(*) FILTER (WHERE {enough}) FROM classes"
    )
    kept = f"kept AS (SELECT {', '.join(key_columns) or '1 AS __one'} FROM classes WHERE {enough})"
    join = " AND ".join(f"s.{name} = kept.{name}" for name in key_columns) or "TRUE"
    projection = ", ".join([f"s.{UNIT}"] + [f"s.__c{index}" for index in range(len(released))])
    stream_sql = f"WITH {ctes},\n{classes},\n{kept}\nSELECT {projection} FROM selected s JOIN kept ON {join}"
    return CompiledExtract(columns=columns, summary_sql=summary_sql, stream_sql=stream_sql)
