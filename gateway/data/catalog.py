"""The dataset catalog: what can be queried, how it is protected, where it lives.

The catalog is operator input, so it is validated strictly on load and every error names the dataset and
column it is about. Paths in it are relative to the catalog file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from anonymization import InvalidPrivacyParameter, Rule
from gateway.exceptions import CatalogError, InvalidDatasetChange
from policies import budget as budget_service

ColumnKind = Literal["identifier", "quasi_identifier", "sensitive", "attribute"]
ColumnType = Literal["string", "integer", "float", "date", "boolean"]
Action = Literal["aggregate", "export"]
_NAME = r"^[a-z][a-z0-9_]{0,62}$"
# Keeps a square of one row's fixed-point value (for variances) far inside 64 bits.
_MAX_FIXED_POINT = 1e9


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PublicKeysFile(_Strict):
    file: str


class ColumnSpec(_Strict):
    type: ColumnType
    kind: ColumnKind = "attribute"
    description: str = ""
    lower: float | None = None
    upper: float | None = None
    public_keys: list[str] | PublicKeysFile | None = None
    decimals: Annotated[int, Field(ge=0, le=6)] = 2
    """Float columns are summed as fixed-point integers with this many decimals."""
    quantile_candidates: Annotated[int, Field(ge=2, le=10_000)] | None = None
    """How many evenly spaced candidates within [lower, upper] a quantile chooses from."""
    generalise: str | None = None
    """How an extract releases this column: ``band:N`` (integers), ``prefix:N`` (text), ``month`` or
    ``year`` (dates). Quasi-identifiers without one are released as they are (and still counted in
    the equivalence classes)."""

    @model_validator(mode="before")
    @classmethod
    def _integer_keys_as_text(cls, value: object) -> object:
        """An integer column's keys may be given as numbers (``[0, 1]``): group keys are compared as the
        column's text, which for an integer is its plain decimal form. Every other column's keys are
        text (a float's or a date's text form is the source's, not Python's); booleans are refused."""
        if not isinstance(value, dict) or not isinstance(value.get("public_keys"), list):
            return value
        keys = []
        for key in value["public_keys"]:
            if isinstance(key, bool):
                raise ValueError("public_keys are text (or, for an integer column, whole numbers), not true/false")
            if isinstance(key, int | float):
                if value.get("type") != "integer":
                    raise ValueError(f"give the public_keys of a {value.get('type')} column as text")
                if isinstance(key, float) and not (math.isfinite(key) and key.is_integer()):
                    raise ValueError(f"public key {key!r} of an integer column is not a whole number")
                if not -(2**63) <= int(key) < 2**63:
                    raise ValueError(f"public key {key!r} does not fit a 64-bit integer")
                key = str(int(key))
            keys.append(key)
        return {**value, "public_keys": keys}

    @model_validator(mode="after")
    def _bounds_make_sense(self) -> ColumnSpec:
        if (self.lower is None) != (self.upper is None):
            raise ValueError("give both lower and upper, or neither")
        if self.lower is not None and self.upper is not None:
            if self.type not in ("integer", "float"):
                raise ValueError("bounds only apply to integer and float columns")
            if not (math.isfinite(self.lower) and math.isfinite(self.upper) and self.lower < self.upper):
                raise ValueError("lower must be below upper, both finite")
            scale = 1 if self.type == "integer" else 10**self.decimals
            # Bounds on the fixed-point grid: the source's rounding (ties away from zero) and Python's
            # (ties to even) then agree, so the sensitivity computed here is the one the source obeys.
            for bound in (self.lower, self.upper):
                if abs(bound * scale - round(bound * scale)) > 1e-9:
                    raise ValueError(f"bound {bound} must be a multiple of 10**-decimals ({1 / scale:g})")
            if max(abs(self.lower), abs(self.upper)) * scale > _MAX_FIXED_POINT:
                raise ValueError(f"bounds times 10**decimals must stay within ±{_MAX_FIXED_POINT:.0e}")
        if isinstance(self.public_keys, list) and len(set(self.public_keys)) != len(self.public_keys):
            raise ValueError("public_keys contains duplicates")
        if isinstance(self.public_keys, list) and not self.public_keys:
            raise ValueError("public_keys is empty; leave it out to release groups through partition selection")
        if self.generalise is not None:
            try:
                rule = Rule.parse(self.generalise)
            except InvalidPrivacyParameter as exc:
                raise ValueError(exc.message) from exc
            needs = {"band": ("integer",), "prefix": ("string",), "month": ("date",), "year": ("date",)}[rule.kind]
            if self.type not in needs:
                raise ValueError(f"generalisation {self.generalise!r} does not apply to a {self.type} column")
        return self

    @property
    def rule(self) -> Rule | None:
        return Rule.parse(self.generalise) if self.generalise is not None else None

    @property
    def keys(self) -> tuple[str, ...] | None:
        """The public category keys (resolved at load time; a file reference never survives loading)."""
        if isinstance(self.public_keys, PublicKeysFile):
            raise CatalogError(f"public_keys file {self.public_keys.file} was not resolved; use load_catalog")
        return tuple(self.public_keys) if self.public_keys is not None else None


class SourceSpec(_Strict):
    """Where a dataset lives: a Parquet or CSV file (read through DuckDB) or a PostgreSQL table."""

    kind: Literal["parquet", "csv", "postgresql"]
    path: str | None = None
    table: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
    url_env: str | None = Field(default=None, pattern=r"^[A-Z][A-Z0-9_]*$")
    """PostgreSQL: the environment variable holding the SQLAlchemy URL, so no password sits in the catalog."""
    delimiter: Literal[",", ";", "\t", "|"] = ","
    """CSV: the field separator. The rest of the dialect is fixed: a header line, UTF-8, ``"`` quotes
    (doubled inside a field), one record per line; nothing is guessed from the file."""

    @model_validator(mode="after")
    def _complete(self) -> SourceSpec:
        if self.kind == "postgresql":
            if self.table is None or self.url_env is None:
                raise ValueError("a postgresql source needs 'table' and 'url_env'")
        elif self.path is None:
            raise ValueError(f"a {self.kind} source needs 'path'")
        return self


class GlobalBudget(_Strict):
    """The most (epsilon, delta) all principals together may spend per period on the datasets of one
    privacy-unit space (a dataset without ``unit_space`` is a space of its own)."""

    epsilon_per_period: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 50.0
    delta_per_period: Annotated[float, Field(ge=0, lt=1)] = 1e-6
    """Spent only by queries that select group keys from the data; 0 forbids them on this dataset."""
    period: Literal["month", "year"] = "month"

    def allowance(self) -> budget_service.Allowance:
        """The cap as the ledger checks it."""
        return budget_service.Allowance(self.epsilon_per_period, self.period, self.delta_per_period)


class LongerCap(_Strict):
    """A bound beyond the period cap: the most (epsilon, delta) all principals together may spend on a
    unit space per year, or over the lifetime of the data. Without it the period cap renews every period
    with no bound on the total."""

    epsilon: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    delta: Annotated[float, Field(ge=0, lt=1)] = 1e-5
    period: Literal["year", "lifetime"] = "year"

    def allowance(self) -> budget_service.Allowance:
        return budget_service.Allowance(self.epsilon, self.period, self.delta)


class UnitSpace(_Strict):
    """Datasets whose privacy units are the same persons (or households, ...): a query on any of them
    spends from one budget, because one person's privacy loss adds up over all of them."""

    description: str = ""
    global_budget: GlobalBudget = Field(default_factory=GlobalBudget)
    longer_cap: LongerCap | None = None


@dataclass(frozen=True, slots=True)
class SpaceBudget:
    """The caps a query on a dataset is checked against: its unit space's period cap and, if set, the
    longer cap; spends are summed over every dataset of the space."""

    unit_space: str
    caps: tuple[budget_service.Allowance, ...]
    datasets: tuple[str, ...] = ()
    """The datasets of the space."""


class LDiversity(_Strict):
    column: str
    l: Annotated[int, Field(ge=2, le=100)]  # noqa: E741 - the literature's name


class ExportProfile(_Strict):
    """What an extract for one purpose may hold (data minimisation by purpose)."""

    columns: Annotated[list[str], Field(min_length=1)]
    l_diversity: LDiversity | None = None


class DatasetSpec(_Strict):
    description: str = ""
    kind: Literal["private", "public"] = "private"
    """``public``: a non-personal reference table (CBS kerncijfers per wijk): no privacy unit, read whole,
    its values usable as group keys and in post-processing, free of budget when read alone."""
    source: SourceSpec
    privacy_unit: str | None = None
    """The column naming the person (or household) a row is about; required for a private dataset."""
    unit_space: Annotated[str, Field(pattern=_NAME)] | None = None
    """The privacy-unit space the dataset's units belong to (see ``UnitSpace``); none: its own."""
    max_contributions: Annotated[int, Field(ge=1, le=10_000)] = 1
    actions: list[Action] = Field(default_factory=lambda: list[Action](["aggregate"]))
    global_budget: GlobalBudget = Field(default_factory=GlobalBudget)
    longer_cap: LongerCap | None = None
    """For a dataset that is a unit space of its own; a shared space sets its caps under unit_spaces."""
    columns: dict[Annotated[str, Field(pattern=_NAME)], ColumnSpec]
    exports: dict[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,127}$")], ExportProfile] = Field(
        default_factory=dict
    )
    """Per purpose, the columns an extract may hold."""

    @property
    def unit(self) -> str:
        """The privacy unit's column (a private dataset always has one)."""
        if self.privacy_unit is None:
            raise CatalogError("a public table has no privacy unit")
        return self.privacy_unit

    @property
    def public(self) -> bool:
        return self.kind == "public"

    @model_validator(mode="after")
    def _privacy_unit_is_a_column(self) -> DatasetSpec:
        if self.kind == "public":
            given = {"privacy_unit", "unit_space", "global_budget", "longer_cap", "exports", "max_contributions"}
            extra = sorted(given & self.model_fields_set)
            if extra:
                raise ValueError(f"a public table has no privacy unit, budget or exports; remove {', '.join(extra)}")
            if self.actions != ["aggregate"]:
                raise ValueError("a public table is read (action 'aggregate') only")
            return self
        if self.privacy_unit is None:
            raise ValueError("a private dataset needs privacy_unit")
        if self.privacy_unit not in self.columns:
            raise ValueError(f"privacy_unit {self.privacy_unit!r} is not one of the columns")
        if self.exports and "export" not in self.actions:
            raise ValueError("exports are described but 'export' is not among the dataset's actions")
        for purpose, profile in self.exports.items():
            for name in profile.columns:
                column = self.columns.get(name)
                if column is None:
                    raise ValueError(f"exports.{purpose}: {name!r} is not one of the columns")
                if column.kind == "identifier" and name != self.privacy_unit:
                    raise ValueError(f"exports.{purpose}: {name!r} is a direct identifier and is never released")
            diverse = profile.l_diversity
            if diverse is not None:
                column = self.columns.get(diverse.column)
                keys = column.public_keys if column is not None else None
                if diverse.column not in profile.columns or column is None or column.kind == "identifier":
                    raise ValueError(f"exports.{purpose}: l-diversity needs an exported column that identifies no one")
                if not isinstance(keys, list | PublicKeysFile) or (isinstance(keys, list) and len(keys) > 62):
                    raise ValueError(f"exports.{purpose}: the l-diversity column needs public_keys (at most 62)")
        return self


class PersonRegister(_Strict):
    """Where a BSN is found for an inzageverzoek: a dataset whose privacy unit is the identifier the
    other datasets use for a person, and its BSN column."""

    dataset: str
    bsn: str


class Catalog(_Strict):
    gemeente: str | None = None
    unit_spaces: dict[Annotated[str, Field(pattern=_NAME)], UnitSpace] = Field(default_factory=dict)
    datasets: dict[Annotated[str, Field(pattern=_NAME)], DatasetSpec]
    persons: PersonRegister | None = None

    @model_validator(mode="after")
    def _register_exists(self) -> Catalog:
        if self.persons is not None:
            dataset = self.datasets.get(self.persons.dataset)
            if dataset is None or self.persons.bsn not in dataset.columns:
                raise ValueError("persons must name a dataset and one of its columns (the BSN)")
        for name, dataset in self.datasets.items():
            if name in self.unit_spaces:
                raise ValueError(f"{name!r} names both a dataset and a unit space")
            if dataset.unit_space is None:
                continue
            if dataset.unit_space not in self.unit_spaces:
                raise ValueError(f"dataset {name!r}: unit_space {dataset.unit_space!r} is not in unit_spaces")
            if {"global_budget", "longer_cap"} & dataset.model_fields_set:
                raise ValueError(
                    f"dataset {name!r}: the caps of unit space {dataset.unit_space!r} are set under unit_spaces"
                )
        return self

    def dataset(self, name: str) -> DatasetSpec | None:
        return self.datasets.get(name)

    def unit_space_of(self, name: str) -> str:
        """The unit space of a dataset: the one it names, or its own (named after it)."""
        return self.datasets[name].unit_space or name

    def space_budget(self, name: str) -> SpaceBudget:
        dataset = self.datasets[name]
        if dataset.unit_space is None:
            own = [dataset.global_budget.allowance()]
            if dataset.longer_cap is not None:
                own.append(dataset.longer_cap.allowance())
            return SpaceBudget(name, tuple(own), (name,))
        space = self.unit_spaces[dataset.unit_space]
        caps = [space.global_budget.allowance()]
        if space.longer_cap is not None:
            caps.append(space.longer_cap.allowance())
        return SpaceBudget(dataset.unit_space, tuple(caps), tuple(self.datasets_in(dataset.unit_space)))

    def datasets_in(self, unit_space: str) -> list[str]:
        return sorted(name for name in self.datasets if self.unit_space_of(name) == unit_space)


def _resolve(base: Path, raw: dict[str, object]) -> None:
    """Make source paths absolute and inline public-key files, in the raw document before validation."""
    for name, dataset in (raw.get("datasets") or {}).items():  # type: ignore[attr-defined]
        if not isinstance(dataset, dict):
            continue
        source = dataset.get("source")
        if isinstance(source, dict) and isinstance(source.get("path"), str):
            source["path"] = str((base / source["path"]).resolve())
        for column_name, column in (dataset.get("columns") or {}).items():
            keys = column.get("public_keys") if isinstance(column, dict) else None
            if isinstance(keys, dict) and isinstance(keys.get("file"), str):
                key_file = base / keys["file"]
                try:
                    lines = key_file.read_text(encoding="utf-8").splitlines()
                except (OSError, UnicodeDecodeError) as exc:
                    raise CatalogError(
                        f"dataset {name!r}, column {column_name!r}: cannot read public_keys file {key_file}: {exc}"
                    ) from exc
                column["public_keys"] = [line.strip() for line in lines if line.strip()]


def load_catalog(path: Path) -> Catalog:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CatalogError(f"cannot read catalog {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise CatalogError(f"catalog {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise CatalogError(f"catalog {path} must be a mapping with a 'datasets' key")
    _resolve(path.parent, raw)
    try:
        return Catalog.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise CatalogError(f"catalog {path} is invalid: {problems}") from exc


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors())


def resolved_entry(
    name: str, entry: object, base: Path, *, readable: Callable[[Path], None] | None = None
) -> dict[str, object]:
    """A dataset entry as the catalog file would hold it, its paths made absolute against ``base`` and its
    public-key files inlined: what a change records, so it means the same in every process. Each file
    the entry names is shown to ``readable`` (which refuses what may not be read) before it is opened;
    every problem is an ``InvalidDatasetChange``."""
    if not isinstance(entry, dict) or not isinstance(entry.get("columns", {}), dict):
        raise InvalidDatasetChange("a dataset entry is a mapping with a mapping of columns")
    source = entry.get("source")
    paths: list[str] = []
    if isinstance(source, dict) and isinstance(source.get("path"), str):
        paths.append(source["path"])
    for column in entry.get("columns", {}).values():
        if not isinstance(column, dict):
            raise InvalidDatasetChange("each column of a dataset entry is a mapping")
        keys = column.get("public_keys")
        if isinstance(keys, dict) and isinstance(keys.get("file"), str):
            paths.append(keys["file"])
    try:
        for path in paths:
            if readable is not None:
                readable((base / path).resolve())
        raw: dict[str, object] = {"datasets": {name: entry}}
        _resolve(base, raw)
    except InvalidDatasetChange:
        raise
    except (CatalogError, OSError, UnicodeDecodeError) as exc:  # said without the system's reason
        raise InvalidDatasetChange(f"dataset {name!r}: a file the entry names cannot be read as text") from exc
    except ValueError as exc:  # a NUL in a path
        raise InvalidDatasetChange(f"dataset {name!r}: a path in the entry is not a valid path") from exc
    return entry


def with_changes(base: Catalog, entries: dict[str, str | None]) -> Catalog:
    """The catalog file's catalog with each changed dataset's latest entry (JSON; ``None``: removed)."""
    document = base.model_dump(mode="json", exclude_unset=True)
    datasets = dict(document.get("datasets", {}))
    for name, entry in entries.items():
        if entry is None:
            datasets.pop(name, None)
        else:
            datasets[name] = json.loads(entry)
    document["datasets"] = datasets
    try:
        return Catalog.model_validate(document)
    except ValidationError as exc:
        raise InvalidDatasetChange(f"the catalog with this change is invalid: {_problems(exc)}") from exc
