"""What a plan reads: its datasets resolved in the catalog, joined into one relation, seen as one dataset.

**Joins on the privacy unit.** Private datasets are joined only on their privacy units, and only within
one unit space (the same persons, one budget). Removing a person then removes exactly that person's
joined rows and no one else's, so the person's contribution to the join is bounded per unit:

- each side already holds at most ``max_contributions`` rows per person (a file's verified snapshot is
  bounded at ingestion; a PostgreSQL table is bounded after the join, below), so an inner or left join
  holds at most the *product* of the datasets' ``max_contributions`` rows per person;
- that product is the join's bound, unless it exceeds ``DATAPOORT_MAX_JOIN_CONTRIBUTIONS`` (default
  10): then the statement keeps a uniformly random ``max_join_contributions`` of each person's joined
  rows, as it does for a single table, and the bound is that setting;
- every aggregate's sensitivity is computed from the join's bound, exactly as for one dataset.

A join on any other column between private datasets is refused: it would pair one person's rows with
another's, and removing one person could then move the rows of many.

**Public reference tables** join on a column whose values are unique in the table (a row of the private
side then matches at most one of it: contributions do not grow). Their values are public: usable as
group keys (their distinct values are the keys) and read per group after release (``lookups``).

**Where it runs.** Snapshots join in DuckDB and tables of one PostgreSQL database in PostgreSQL, as one
statement. A join of a file with a PostgreSQL table runs in DuckDB: the table moves, as a stream of
Arrow batches of only the catalog's columns, typed by PostgreSQL; DuckDB's hash join holds what it must
within its memory limit and spills the rest (``DATAPOORT_DUCKDB_MEMORY_LIMIT``), so the gateway's memory
is bounded by that limit plus one batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.data.catalog import Catalog, ColumnSpec, DatasetSpec
from gateway.data.public_tables import PublicTable
from gateway.data.relations import Relation, ident, source_relation, typed_projection
from gateway.exceptions import QueryNotSupported, UnknownColumn, UnknownDataset
from gateway.query.expressions import columns_of, derived_spec
from gateway.query.plan import QueryPlan, TableRef

DEFAULT_MAX_JOIN_CONTRIBUTIONS = 10
MAX_PUBLIC_KEYS = 10_000


@dataclass(frozen=True, slots=True)
class ResolvedPlan:
    """A plan and the one dataset its statement reads (a join's columns named ``alias.column``)."""

    plan: QueryPlan
    dataset: DatasetSpec
    private: tuple[str, ...]
    """The private datasets read, the charged one (the first) first."""
    public: tuple[str, ...] = ()
    lookups: dict[str, dict[str, Any]] = field(default_factory=dict)
    """A public column read per group -> its value for each key of the grouping column."""
    product: int = 1
    """The product of the private datasets' ``max_contributions``: a join's natural bound."""

    @property
    def joined(self) -> bool:
        return bool(self.plan.tables)


class CatalogNames:
    """The catalog as the SQL front door sees it (``sql_frontend.Names``)."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def columns(self, dataset: str) -> set[str] | None:
        spec = self._catalog.dataset(dataset)
        return set(spec.columns) if spec is not None else None

    def is_public(self, dataset: str) -> bool:
        spec = self._catalog.dataset(dataset)
        return spec is not None and spec.public


def _spec(catalog: Catalog, name: str) -> DatasetSpec:
    dataset = catalog.dataset(name)
    if dataset is None or "aggregate" not in dataset.actions:
        raise UnknownDataset(f"there is no dataset {name!r} that can be aggregated")
    return dataset


def resolve(
    plan: QueryPlan,
    catalog: Catalog,
    *,
    public_table: Callable[[str, DatasetSpec], PublicTable],
    max_join_contributions: int = DEFAULT_MAX_JOIN_CONTRIBUTIONS,
) -> ResolvedPlan:
    """The plan's dataset: the catalog's entry, or (for a join or derived columns) one made for the query."""
    if not plan.tables:
        dataset = _spec(catalog, plan.dataset)
        if dataset.public:
            raise QueryNotSupported(f"{plan.dataset!r} is a public table: it is read as it is, without noise")
        return ResolvedPlan(plan, _with_derived(plan, dataset, dataset.columns), (plan.dataset,), (), {}, 1)
    specs = {table.alias: _spec(catalog, table.dataset) for table in plan.tables}
    private = [table for table in plan.tables if not specs[table.alias].public]
    if not private:
        raise QueryNotSupported("a join needs a private dataset; public tables alone are read without noise")
    columns: dict[str, ColumnSpec] = {}
    tables: dict[str, PublicTable] = {}
    for table in plan.tables:
        spec = specs[table.alias]
        if spec.public:
            tables[table.alias] = public_table(table.dataset, spec)
        for name, column in spec.columns.items():
            flat = f"{table.alias}.{name}"
            columns[flat] = _public_column(column, tables[table.alias], name) if spec.public else column
    for table in plan.tables[1:]:
        _check_join(table, plan, specs, catalog, tables, columns)
    primary = private[0]
    product = math.prod(specs[table.alias].max_contributions for table in private)
    bound = min(product, max_join_contributions)
    base = specs[primary.alias]
    dataset = DatasetSpec.model_construct(
        kind="private",
        source=base.source,
        privacy_unit=f"{primary.alias}.{base.unit}",
        unit_space=base.unit_space,
        max_contributions=bound,
        actions=["aggregate"],
        columns=columns,
        description=f"{plan.dataset} joined",
    )
    lookups = {}
    for public_flat, group_flat in plan.lookups:
        alias, wanted = public_flat.split(".", 1)
        key = next(table.on for table in plan.tables if table.alias == alias)
        if key is None or wanted not in specs[alias].columns:
            raise UnknownColumn(f"public table {_dataset_of(plan, alias)!r} has no column {wanted!r}")
        del group_flat  # the grouping column the key is compared with, by the front door
        lookups[public_flat] = tables[alias].lookup(key[1].split(".", 1)[1], wanted)
    return ResolvedPlan(
        plan,
        _with_derived(plan, dataset, columns),
        tuple(table.dataset for table in private),
        tuple(table.dataset for table in plan.tables if specs[table.alias].public),
        lookups,
        product,
    )


def _public_column(column: ColumnSpec, table: PublicTable, name: str) -> ColumnSpec:
    """A public table's column: its distinct values are public keys (for text and integer columns)."""
    if column.type not in ("string", "integer"):
        return column
    keys = sorted({str(value) for value in table.values(name) if value is not None})
    if not keys or len(keys) > MAX_PUBLIC_KEYS:
        return column
    return column.model_copy(update={"public_keys": keys, "kind": "attribute"})


def _check_join(
    table: TableRef,
    plan: QueryPlan,
    specs: dict[str, DatasetSpec],
    catalog: Catalog,
    tables: dict[str, PublicTable],
    columns: dict[str, ColumnSpec],
) -> None:
    if table.on is None:  # pragma: no cover - the front door gives every join its condition
        raise QueryNotSupported("a join needs a condition")
    left, right = table.on
    left_alias, left_column = left.split(".", 1)
    right_alias, right_column = right.split(".", 1)
    for alias, column in ((left_alias, left_column), (right_alias, right_column)):
        if column not in specs[alias].columns:
            raise UnknownColumn(f"dataset {_dataset_of(plan, alias)!r} has no column {column!r}")
    left_spec, right_spec = specs[left_alias], specs[right_alias]
    if not left_spec.public and not right_spec.public:
        names = (_dataset_of(plan, left_alias), _dataset_of(plan, right_alias))
        if left_column != left_spec.unit or right_column != right_spec.unit:
            raise QueryNotSupported(
                f"private datasets are joined on their privacy units only ({names[0]}.{left_spec.unit} = "
                f"{names[1]}.{right_spec.unit}); a join on {left} = {right} could pair one person's rows "
                "with another's"
            )
        if catalog.unit_space_of(names[0]) != catalog.unit_space_of(names[1]):
            raise QueryNotSupported(
                f"{names[0]} and {names[1]} are in different unit spaces (their units are not the same persons); "
                "only datasets of one unit space are joined"
            )
        return
    if left_spec.public and right_spec.public:
        raise QueryNotSupported("two public tables are not joined to each other; join each to the private dataset")
    public_alias, public_column = (left_alias, left_column) if left_spec.public else (right_alias, right_column)
    private_alias, private_column = (right_alias, right_column) if left_spec.public else (left_alias, left_column)
    if not tables[public_alias].unique(public_column):
        raise QueryNotSupported(
            f"column {public_column!r} of public table {_dataset_of(plan, public_alias)!r} is not unique, so a row "
            "could match several of its rows; join on its key"
        )
    private_spec = specs[private_alias].columns[private_column]
    if private_spec.kind == "identifier" or private_column == specs[private_alias].privacy_unit:
        raise QueryNotSupported("a public table is joined on a public attribute (a wijk code), not on an identifier")
    flat = f"{private_alias}.{private_column}"
    if table.join == "inner" and columns[flat].keys is None:
        # An inner join keeps only rows whose value is in the public table: its values are the keys.
        keys = sorted({str(v) for v in tables[public_alias].values(public_column) if v is not None})
        if keys and len(keys) <= MAX_PUBLIC_KEYS and columns[flat].type in ("string", "integer"):
            columns[flat] = columns[flat].model_copy(update={"public_keys": keys})


def _dataset_of(plan: QueryPlan, alias: str) -> str:
    return next(table.dataset for table in plan.tables if table.alias == alias)


def _with_derived(plan: QueryPlan, dataset: DatasetSpec, columns: dict[str, ColumnSpec]) -> DatasetSpec:
    if not plan.derived:
        return dataset
    extended = dict(columns)
    for derived in plan.derived:
        for name in columns_of(derived.expression):
            if name not in columns:
                raise UnknownColumn(f"dataset {plan.dataset!r} has no column {name!r}")
        extended[derived.name] = derived_spec(derived.expression, extended, derived.text)
    return dataset.model_copy(update={"columns": extended})


def joined_relation(
    resolved: ResolvedPlan,
    catalog: Catalog,
    *,
    relation_for: Callable[[str, DatasetSpec], Relation],
    public_table: Callable[[str, DatasetSpec], PublicTable],
    arrow_reader: Callable[[DatasetSpec, str], Any],
) -> Relation:
    """One relation holding the join, in the dialect where it can run as one statement."""
    plan = resolved.plan
    parts: list[tuple[TableRef, DatasetSpec, Relation | None]] = []
    for table in plan.tables:
        spec = _spec(catalog, table.dataset)
        parts.append((table, spec, None if spec.public else relation_for(table.dataset, spec)))
    relations = [relation for _, _, relation in parts if relation is not None]
    postgres = {relation.postgres_env for relation in relations if relation.dialect == "postgres"}
    dialect = "postgres" if len(postgres) == 1 and all(r.dialect == "postgres" for r in relations) else "duckdb"
    inputs: list[tuple[str, Callable[[], Any]]] = []
    sources, selected = [], []
    for table, spec, relation in parts:
        alias = ident(table.alias, dialect)
        if relation is None:
            sql = public_table(table.dataset, spec).values_sql(spec, dialect)
        elif relation.dialect != dialect:  # a PostgreSQL table moving into DuckDB
            name = f"__moved_{len(inputs)}"
            statement = f"SELECT {typed_projection(spec, set(spec.columns), 'postgres')} FROM {source_relation(spec, 'postgres')}"  # noqa: S608, E501
            inputs.append((name, _opener(arrow_reader, spec, statement)))
            sql = name
        elif relation.typed:
            sql = relation.sql
        else:
            sql = f"(SELECT {typed_projection(spec, set(spec.columns), dialect)} FROM {relation.sql})"  # noqa: S608
        joined = f"{sql} AS {alias}"
        if table.on is None:
            sources.append(joined)
        else:
            left, right = (_qualified(name, dialect) for name in table.on)
            sources.append(f"{'LEFT' if table.join == 'left' else 'INNER'} JOIN {joined} ON {left} = {right}")
        selected += [
            f"{alias}.{ident(column, dialect)} AS {ident(f'{table.alias}.{column}', dialect)}"
            for column in spec.columns
        ]
    bounded = all(relation.bounded for relation in relations) and resolved.product == resolved.dataset.max_contributions
    sql = f"(SELECT {', '.join(selected)} FROM {' '.join(sources)}) AS __joined"  # noqa: S608 - quoted names
    return Relation(
        sql,
        dialect,
        typed=True,
        bounded=bounded and dialect == "duckdb" and not inputs,
        postgres_env=next(iter(postgres)) if dialect == "postgres" else None,
        inputs=tuple(inputs),
    )


def _opener(arrow_reader: Callable[[DatasetSpec, str], Any], spec: DatasetSpec, sql: str) -> Callable[[], Any]:
    return lambda: arrow_reader(spec, sql)


def _qualified(flat: str, dialect: str) -> str:
    alias, column = flat.split(".", 1)
    return f"{ident(alias, dialect)}.{ident(column, dialect)}"
