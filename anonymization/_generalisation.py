"""Generalisation of quasi-identifiers, and the k-anonymity and l-diversity checks over the result.

Rules are written in the catalog as short strings and applied by the source (pushed down as SQL, so the
equivalence classes are counted where the data is); ``Rule.apply`` is the reference a test holds the SQL
to::

    band:5      integer → "1980-1984" (the 5-year band holding it; floor division, so negatives too)
    prefix:4    text → its first 4 characters (PC6 "1234AB" → PC4 "1234")
    month       date → "2026-11"
    year        date → "2026"
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal

from anonymization.errors import InvalidPrivacyParameter

_RULE = re.compile(r"^(?:(band):([1-9][0-9]{0,5})|(prefix):([1-9][0-9]?)|(month|year))$")


@dataclass(frozen=True, slots=True)
class Rule:
    kind: Literal["band", "prefix", "month", "year"]
    size: int = 0

    @classmethod
    def parse(cls, text: str) -> Rule:
        found = _RULE.match(text)
        if found is None:
            raise InvalidPrivacyParameter(f"unknown generalisation {text!r} (band:N, prefix:N, month or year)")
        band, width, prefix, length, period = found.groups()
        if band:
            return cls("band", int(width))
        if prefix:
            return cls("prefix", int(length))
        return cls(period)  # type: ignore[arg-type]

    def describe(self) -> str:
        return f"{self.kind}:{self.size}" if self.kind in ("band", "prefix") else self.kind

    def apply(self, value: object) -> str | None:
        if value is None:
            return None
        if self.kind == "band":
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError("a band generalises integers")
            lower = (value // self.size) * self.size
            return f"{lower}-{lower + self.size - 1}"
        if self.kind == "prefix":
            return str(value)[: self.size]
        if not isinstance(value, date):
            raise TypeError(f"{self.kind} generalises dates")
        return f"{value:%Y-%m}" if self.kind == "month" else f"{value:%Y}"


def small_classes(
    records: Iterable[Sequence[object]],
    *,
    quasi_identifiers: Sequence[int],
    unit: int,
    k: int,
    sensitive: int | None = None,
    l_diversity: int = 1,
) -> dict[tuple[object, ...], int]:
    """The equivalence classes (by the values at ``quasi_identifiers``) holding fewer than ``k`` distinct
    units or fewer than ``l_diversity`` distinct values at ``sensitive``, with their sizes. Empty means the
    records are k-anonymous (and l-diverse). The reference check, for tests and audits of an output."""
    units: dict[tuple[object, ...], set[object]] = defaultdict(set)
    values: dict[tuple[object, ...], set[object]] = defaultdict(set)
    for record in records:
        key = tuple(record[index] for index in quasi_identifiers)
        units[key].add(record[unit])
        if sensitive is not None:
            values[key].add(record[sensitive])
    return {
        key: len(members)
        for key, members in units.items()
        if len(members) < k or (sensitive is not None and len(values[key]) < l_diversity)
    }
