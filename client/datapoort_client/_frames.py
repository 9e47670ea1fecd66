"""Answers as DataFrames: each released value beside the interval the gateway reported for it.

The gateway answers ``columns`` and ``rows`` and, in ``privacy.aggregates``, a report per released value
with its ``half_width`` at the answer's confidence: one number for the whole column (counts, sums) or
one per row (means, variances, computed expressions, where ``null`` means no formula is known). The
bounds are ``value ± half_width`` exactly as reported; the client computes no accuracy of its own. A
value without a half-width (a median: its report gives a rank interval instead) gets null bounds, so
every released value has its two bound columns and code reading them need not ask which kind it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeGuard

import pandas as pd

if TYPE_CHECKING:
    import polars as pl

Backend = Literal["pandas", "polars"]
BACKENDS: tuple[Backend, ...] = ("pandas", "polars")
LOWER, UPPER = "_lower", "_upper"


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")


def _half_widths(report: Mapping[str, Any], rows: int) -> list[float | None]:
    width = report.get("half_width")
    if isinstance(width, list) and len(width) == rows:
        return [float(item) if _is_number(item) else None for item in width]
    if _is_number(width):
        return [float(width)] * rows
    return [None] * rows


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def released_columns(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], aggregates: Mapping[str, Any]
) -> tuple[dict[str, list[Any]], set[str]]:
    """Column name → values, each released value followed by its ``_lower`` and ``_upper`` bounds;
    and the names of the bound columns (always floats)."""
    data: dict[str, list[Any]] = {}
    bounds: set[str] = set()
    for index, name in enumerate(columns):
        values = [row[index] for row in rows]
        data[name] = values
        report = aggregates.get(name)
        if not isinstance(report, Mapping):
            continue  # a group key or a public column looked up per group: exact
        widths = _half_widths(report, len(values))
        pairs = [
            (value - width, value + width) if _is_number(value) and width is not None else (None, None)
            for value, width in zip(values, widths, strict=True)
        ]
        data[name + LOWER] = [lower for lower, _ in pairs]
        data[name + UPPER] = [upper for _, upper in pairs]
        bounds.update((name + LOWER, name + UPPER))
    return data, bounds


def to_pandas(data: Mapping[str, list[Any]], floats: Iterable[str] = ()) -> pd.DataFrame:
    as_float = set(floats)
    return pd.DataFrame(
        {name: pd.Series(values, dtype="float64" if name in as_float else None) for name, values in data.items()}
    )


def to_polars(data: Mapping[str, list[Any]], floats: Iterable[str] = ()) -> pl.DataFrame:
    try:
        import polars as pl
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("backend='polars' needs polars: pip install 'datapoort-client[polars]'") from exc
    overrides = dict.fromkeys(floats, pl.Float64)
    return pl.DataFrame(dict(data), schema_overrides=overrides, strict=False)


def frame(data: Mapping[str, list[Any]], backend: Backend, floats: Iterable[str] = ()) -> pd.DataFrame | pl.DataFrame:
    """The columns as a pandas or polars DataFrame."""
    return to_polars(data, floats) if backend == "polars" else to_pandas(data, floats)


def records_frame(records: Sequence[Mapping[str, Any]], backend: Backend) -> pd.DataFrame | pl.DataFrame:
    """A list of JSON objects (budgets, datasets) as a DataFrame, one row each, keys in first-seen order."""
    names = list(dict.fromkeys(name for record in records for name in record))
    return frame({name: [record.get(name) for record in records] for name in names}, backend)


def compare_columns(gemeenten: Sequence[Mapping[str, Any]]) -> tuple[dict[str, list[Any]], set[str]]:
    """A comparison in one long table: per gemeente its rows with their bounds; a gemeente that did not
    answer is one row with its ``status`` and ``error`` and null values, so it is seen, not dropped."""
    parts: list[tuple[Mapping[str, Any], dict[str, list[Any]], int]] = []
    floats: set[str] = set()
    for entry in gemeenten:
        if entry.get("status") == "answered" and isinstance(entry.get("columns"), list):
            privacy = entry.get("privacy")
            aggregates = privacy.get("aggregates") if isinstance(privacy, Mapping) else entry.get("aggregates")
            rows = entry.get("rows") or []
            data, bounds = released_columns(entry["columns"], rows, aggregates or {})
            parts.append((entry, data, len(rows)))
            floats |= bounds
        else:
            parts.append((entry, {}, 1))
    names = ["gemeente", "peer", "status"]
    names += list(dict.fromkeys(name for _, data, _ in parts for name in data))
    names += ["error", "detail"]
    table: dict[str, list[Any]] = {name: [] for name in dict.fromkeys(names)}
    for entry, data, count in parts:
        for name in table:
            if name in data:
                table[name].extend(data[name])
            elif name in ("gemeente", "peer", "status", "error", "detail"):
                table[name].extend([entry.get(name)] * count)
            else:
                table[name].extend([None] * count)
    return table, floats
