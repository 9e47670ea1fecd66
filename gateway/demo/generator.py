"""A deterministic synthetic Voorbeeldstad (gemeente code GM9999).

Everything is drawn from one seeded NumPy generator, so the same seed and size give byte-identical
Parquet files. The data is synthetic but shaped like the real thing: an age pyramid, wijken that differ
in income and in use of bijstand, jeugdzorg and Wmo, valid (11-proef) BSNs, PC6 postcodes within each
buurt, and burglaries concentrated in some buurten. It exists to exercise the gateway; no statistic
drawn from it means anything.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

GEMEENTE_CODE = "GM9999"
GEMEENTE_NAME = "Voorbeeldstad"
REFERENCE_YEAR = 2026
DEFAULT_SEED = 20261123
DEFAULT_RESIDENTS = 100_000

WIJK_NAMES = (
    "Centrum",
    "Oude Haven",
    "Noorderpark",
    "Bosrijk",
    "Zuiderveld",
    "De Vaart",
    "Molenwijk",
    "Kanaalzone",
    "Buitenhof",
    "Westerkwartier",
)
HOUSEHOLD_TYPES = ("alleenstaand", "paar_zonder_kinderen", "paar_met_kinderen", "eenoudergezin", "overig")
SEXES = ("M", "V")
JEUGDZORG_VORMEN = ("ambulant", "verblijf", "jeugdbescherming", "jeugdreclassering")
WMO_VOORZIENINGEN = ("huishoudelijke_hulp", "begeleiding", "woningaanpassing", "vervoer", "hulpmiddel")
FIRST_NAMES = (
    "Daan", "Sem", "Noah", "Lucas", "Levi", "Finn", "Mohammed", "Jesse", "Bram", "Luuk", "Emma", "Julia",
    "Tess", "Sophie", "Zoë", "Mila", "Sara", "Nora", "Fenna", "Yara", "Anna", "Eva", "Fatima", "Jan",
    "Kees", "Henk", "Ingrid", "Marja", "Wim", "Annemiek",
)  # fmt: skip
LAST_NAMES = (
    "de Jong", "Jansen", "de Vries", "van den Berg", "van Dijk", "Bakker", "Janssen", "Visser", "Smit",
    "Meijer", "de Boer", "Mulder", "de Groot", "Bos", "Vos", "Peters", "Hendriks", "van Leeuwen", "Dekker",
    "Brouwer", "de Wit", "Dijkstra", "Smits", "de Graaf", "van der Meer", "Yılmaz",  # noqa: RUF001 - a Turkish surname, spelt as its bearers spell it
    "El Amrani", "Kaya",
    "Nguyen", "Bouzid",
)  # fmt: skip

# Distinct BSN prefixes come from a fixed permutation i -> (A*i + B) mod 90_000_000 of the 8-digit range:
# unique without a huge array, and A shares no factor with 90_000_000 (= 2^7 * 3^2 * 5^7).
_PREFIX_RANGE = 90_000_000
_PREFIX_MULTIPLIER = 48_271_013
_PREFIX_OFFSET = 12_345_678
_START = dt.date(2023, 1, 1)
_END = dt.date(2026, 10, 31)


def bsn_is_valid(bsn: str) -> bool:
    """The 11-proef: 9*d1 + 8*d2 + ... + 2*d8 - 1*d9 is divisible by 11 (and not all zeros)."""
    if len(bsn) != 9 or not bsn.isdigit() or bsn == "000000000":
        return False
    weights = (9, 8, 7, 6, 5, 4, 3, 2, -1)
    return sum(w * int(d) for w, d in zip(weights, bsn, strict=True)) % 11 == 0


def _bsns(count: int) -> np.ndarray[Any, Any]:
    candidates = int(count * 1.2) + 100
    index = np.arange(candidates, dtype=np.int64)
    prefixes = (_PREFIX_MULTIPLIER * index + _PREFIX_OFFSET) % _PREFIX_RANGE + 10_000_000
    digits = np.stack([(prefixes // 10 ** (7 - i)) % 10 for i in range(8)], axis=1)
    check = (digits * np.arange(9, 1, -1)).sum(axis=1) % 11
    valid = check < 10
    numbers = (prefixes * 10 + check)[valid][:count]
    if len(numbers) < count:  # pragma: no cover - 1.2x oversampling always suffices (10/11 are valid)
        raise RuntimeError("not enough BSN candidates")
    result: np.ndarray[Any, Any] = numbers.astype(str)
    return result


@dataclass(frozen=True, slots=True)
class Geography:
    wijk_codes: tuple[str, ...]
    buurt_codes: tuple[str, ...]
    buurt_wijk: tuple[int, ...]
    buurt_pc4: tuple[str, ...]
    buurt_weight: np.ndarray[Any, Any]
    wijk_deprivation: np.ndarray[Any, Any]
    """0 (well-off) to 1 (deprived): drives income and social-domain rates."""


def _geography(rng: np.random.Generator) -> Geography:
    wijk_codes = tuple(f"WK{GEMEENTE_CODE[2:]}{index:02d}" for index in range(len(WIJK_NAMES)))
    buurt_codes: list[str] = []
    buurt_wijk: list[int] = []
    for wijk_index, wijk_code in enumerate(wijk_codes):
        for buurt_index in range(int(rng.integers(3, 8))):
            buurt_codes.append(f"BU{wijk_code[2:]}{buurt_index:02d}")
            buurt_wijk.append(wijk_index)
    buurt_pc4 = tuple(str(9100 + index * 3) for index in range(len(buurt_codes)))
    return Geography(
        wijk_codes=wijk_codes,
        buurt_codes=tuple(buurt_codes),
        buurt_wijk=tuple(buurt_wijk),
        buurt_pc4=buurt_pc4,
        buurt_weight=rng.dirichlet(np.full(len(buurt_codes), 4.0)),
        wijk_deprivation=rng.beta(2.0, 3.0, size=len(wijk_codes)),
    )


def _ages(rng: np.random.Generator, count: int) -> np.ndarray[Any, Any]:
    ages = np.arange(0, 101)
    weight = np.where(ages < 65, 1.0, np.exp(-(ages - 65) / 12.0))
    return rng.choice(ages, size=count, p=weight / weight.sum())


def _dates(rng: np.random.Generator, count: int, start: dt.date = _START, end: dt.date = _END) -> np.ndarray[Any, Any]:
    span = (end - start).days
    return np.datetime64(start) + rng.integers(0, span, size=count).astype("timedelta64[D]")


def _pick(
    rng: np.random.Generator, options: tuple[str, ...], count: int, p: list[float] | None = None
) -> np.ndarray[Any, Any]:
    return np.asarray(options)[rng.choice(len(options), size=count, p=p)]


def _write(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, compression="zstd", row_group_size=256_000)
    os.chmod(path, 0o600)  # synthetic, but shaped like the real thing: BSNs, names, addresses


def _residents(rng: np.random.Generator, geo: Geography, count: int) -> dict[str, np.ndarray[Any, Any]]:
    buurt = rng.choice(len(geo.buurt_codes), size=count, p=geo.buurt_weight)
    wijk = np.asarray(geo.buurt_wijk)[buurt]
    deprivation = geo.wijk_deprivation[wijk]
    age = _ages(rng, count)
    adult = age >= 18
    income = (
        np.where(
            adult,
            np.clip(rng.lognormal(10.45 - 0.6 * deprivation, 0.55, size=count), 0, 250_000),
            0.0,
        )
        .round(-2)
        .astype(np.int64)
    )
    household = np.where(
        age < 18,
        np.where(rng.random(count) < 0.2 + 0.2 * deprivation, "eenoudergezin", "paar_met_kinderen"),
        _pick(rng, HOUSEHOLD_TYPES, count, [0.38, 0.28, 0.24, 0.07, 0.03]),
    )
    letters = np.asarray(list("ABCDEFGHJKLMNPRSTVWXZ"))
    pc6 = np.char.add(
        np.asarray(geo.buurt_pc4)[buurt],
        np.char.add(letters[rng.integers(0, 6, size=count)], letters[rng.integers(0, len(letters), size=count)]),
    )
    names = np.char.add(
        np.char.add(_pick(rng, FIRST_NAMES, count), " "),
        _pick(rng, LAST_NAMES, count),
    )
    return {
        "person_id": np.char.add("P", np.char.zfill(np.arange(1, count + 1).astype(str), 8)),
        "bsn": _bsns(count),
        "naam": names,
        "birth_year": (REFERENCE_YEAR - age).astype(np.int64),
        "sex": _pick(rng, SEXES, count),
        "wijk": np.asarray(geo.wijk_codes)[wijk],
        "buurt": np.asarray(geo.buurt_codes)[buurt],
        "pc6": pc6,
        "household_type": household,
        "income": income,
        "_age": age,
        "_deprivation": deprivation,
    }


def _select(rng: np.random.Generator, probability: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return np.flatnonzero(rng.random(len(probability)) < probability)


def _spells(rng: np.random.Generator, people: np.ndarray[Any, Any], max_spells: int) -> np.ndarray[Any, Any]:
    """Each selected person gets 1..max_spells records."""
    return np.repeat(people, rng.integers(1, max_spells + 1, size=len(people)))


def _social_record_table(
    rng: np.random.Generator, residents: dict[str, np.ndarray[Any, Any]], rows: np.ndarray[Any, Any], prefix: str
) -> dict[str, Any]:
    start = _dates(rng, len(rows))
    duration = rng.integers(30, 900, size=len(rows)).astype("timedelta64[D]")
    end = start + duration
    ongoing = end > np.datetime64(_END)
    return {
        "record_id": np.char.add(prefix, np.char.zfill(np.arange(1, len(rows) + 1).astype(str), 8)),
        "person_id": residents["person_id"][rows],
        "wijk": residents["wijk"][rows],
        "buurt": residents["buurt"][rows],
        "start_date": start,
        "end_date": pa.array(end, mask=ongoing),
    }


@dataclass(frozen=True, slots=True)
class DemoData:
    directory: Path
    catalog_path: Path
    residents: int
    rows: dict[str, int]


def generate(
    directory: Path, *, residents: int = DEFAULT_RESIDENTS, seed: int = DEFAULT_SEED, gemeente: str = GEMEENTE_NAME
) -> DemoData:
    """Write the Voorbeeldstad Parquet files and their catalog into ``directory`` (``gemeente``: the name
    its catalog gives, for a demo of several gemeenten)."""
    if residents < 1:
        raise ValueError("residents must be at least 1")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    geo = _geography(rng)
    people = _residents(rng, geo, residents)
    age, deprivation = people.pop("_age"), people.pop("_deprivation")
    _write(pa.table(people), directory / "residents.parquet")

    working_age = (age >= 18) & (age < 67)
    bijstand_rows = _spells(rng, _select(rng, working_age * (0.01 + 0.08 * deprivation)), 2)
    bijstand = _social_record_table(rng, people, bijstand_rows, "B")
    bijstand["uitkering_per_maand"] = (
        rng.normal(1250, 180, size=len(bijstand_rows)).clip(400, 2400).round().astype(np.int64)
    )
    _write(pa.table(bijstand), directory / "bijstand.parquet")

    jeugd_rows = _spells(rng, _select(rng, (age < 18) * (0.06 + 0.12 * deprivation)), 3)
    jeugdzorg = _social_record_table(rng, people, jeugd_rows, "J")
    jeugdzorg["zorgvorm"] = _pick(rng, JEUGDZORG_VORMEN, len(jeugd_rows), [0.7, 0.1, 0.15, 0.05])
    jeugdzorg["kosten"] = rng.gamma(2.0, 4000, size=len(jeugd_rows)).clip(0, 150_000).round().astype(np.int64)
    _write(pa.table(jeugdzorg), directory / "jeugdzorg.parquet")

    wmo_rows = _spells(rng, _select(rng, (age >= 65) * (0.08 + 0.2 * (age >= 80))), 3)
    wmo = _social_record_table(rng, people, wmo_rows, "W")
    wmo["voorziening"] = _pick(rng, WMO_VOORZIENINGEN, len(wmo_rows), [0.4, 0.2, 0.15, 0.15, 0.1])
    wmo["kosten"] = rng.gamma(2.0, 1500, size=len(wmo_rows)).clip(0, 60_000).round().astype(np.int64)
    _write(pa.table(wmo), directory / "wmo.parquet")

    # About 4 burglaries per 1,000 residents per year, more where deprivation is high; the victim is a
    # resident of that buurt (the privacy unit), and a household may be hit more than once.
    victims = _select(rng, (age >= 18) * 0.016 * (0.5 + deprivation))
    victims = _spells(rng, victims, 2)
    inbraak = {
        "incident_id": np.char.add("I", np.char.zfill(np.arange(1, len(victims) + 1).astype(str), 8)),
        "person_id": people["person_id"][victims],
        "wijk": people["wijk"][victims],
        "buurt": people["buurt"][victims],
        "pc6": people["pc6"][victims],
        "datum": _dates(rng, len(victims)),
        "poging": rng.random(len(victims)) < 0.35,
    }
    _write(pa.table(inbraak), directory / "woninginbraak.parquet")
    _write(_kerncijfers(rng, geo, people["wijk"]), directory / "kerncijfers.parquet")

    catalog_path = directory / "catalog.yaml"
    catalog_path.write_text(
        yaml.safe_dump(_catalog(geo, gemeente), sort_keys=False, allow_unicode=True), encoding="utf-8"
    )
    return DemoData(
        directory=directory,
        catalog_path=catalog_path,
        residents=residents,
        rows={
            "residents": residents,
            "bijstand": len(bijstand_rows),
            "jeugdzorg": len(jeugd_rows),
            "wmo": len(wmo_rows),
            "woninginbraak": len(victims),
        },
    )


def _geo_columns(geo: Geography) -> dict[str, Any]:
    return {
        "wijk": {
            "type": "string",
            "kind": "quasi_identifier",
            "description": "CBS wijkcode",
            "public_keys": list(geo.wijk_codes),
        },
        "buurt": {
            "type": "string",
            "kind": "quasi_identifier",
            "description": "CBS buurtcode",
            "public_keys": list(geo.buurt_codes),
        },
    }


def _record_dataset(
    geo: Geography,
    description: str,
    name: str,
    *,
    max_contributions: int,
    exports: dict[str, Any] | None = None,
    **columns: dict[str, Any],
) -> dict[str, Any]:
    """A social-domain dataset: one row per record of a resident, with the record's own columns."""
    dataset: dict[str, Any] = {
        "description": description,
        "source": {"kind": "parquet", "path": f"{name}.parquet"},
        "privacy_unit": "person_id",
        "unit_space": "person",
        "max_contributions": max_contributions,
        "actions": ["aggregate", "export"] if exports else ["aggregate"],
        "columns": {
            "record_id": {"type": "string", "kind": "identifier"},
            "person_id": {"type": "string", "kind": "identifier", "description": "links to residents.person_id"},
            **_geo_columns(geo),
            # A start and end date together nearly single a person out: an extract releases years.
            "start_date": {"type": "date", "kind": "quasi_identifier", "generalise": "year"},
            "end_date": {"type": "date", "kind": "quasi_identifier", "generalise": "year"},
            **columns,
        },
    }
    if exports:
        dataset["exports"] = exports
    return dataset


def _kerncijfers(rng: np.random.Generator, geo: Geography, wijk: np.ndarray) -> pa.Table:
    """CBS-style key figures per wijk (public): inhabitants rounded to fives, as CBS publishes them."""
    inwoners = np.array([int(np.sum(wijk == code)) for code in geo.wijk_codes])
    inwoners = (np.round(inwoners / 5) * 5).astype(np.int64)
    return pa.table(
        {
            "wijk": list(geo.wijk_codes),
            "wijknaam": list(WIJK_NAMES),
            "inwoners": inwoners,
            "huishoudens": (inwoners / rng.uniform(1.8, 2.4, size=len(inwoners))).round().astype(np.int64),
            "oppervlakte_ha": rng.uniform(80, 900, size=len(inwoners)).round(1),
        }
    )


def _catalog(geo: Geography, gemeente: str = GEMEENTE_NAME) -> dict[str, Any]:
    """The catalog of the demo datasets, with their public keys and bounds."""
    return {
        "gemeente": f"{gemeente} ({GEMEENTE_CODE})" if gemeente == GEMEENTE_NAME else gemeente,
        # Where an inzageverzoek's BSN is found: person_id is what every dataset calls a person.
        "persons": {"dataset": "residents", "bsn": "bsn"},
        # Every dataset's privacy unit is a resident (person_id): one person's loss adds up over all of
        # them, so they share one budget and one cap, and the cap renews only up to a yearly bound.
        "unit_spaces": {
            "person": {
                "description": "Ingezetenen van Voorbeeldstad: elke dataset met person_id als privacy unit",
                "global_budget": {"epsilon_per_period": 50.0, "delta_per_period": 1e-6, "period": "month"},
                "longer_cap": {"epsilon": 200.0, "delta": 1e-5, "period": "year"},
            }
        },
        "datasets": {
            "residents": {
                "description": "Ingezetenen van Voorbeeldstad (BRP-uittreksel, synthetisch)",
                "source": {"kind": "parquet", "path": "residents.parquet"},
                "privacy_unit": "person_id",
                "unit_space": "person",
                "max_contributions": 1,
                "actions": ["aggregate", "export"],
                "columns": {
                    "person_id": {"type": "string", "kind": "identifier"},
                    "bsn": {"type": "string", "kind": "identifier", "description": "burgerservicenummer"},
                    "naam": {"type": "string", "kind": "identifier"},
                    "birth_year": {
                        "type": "integer",
                        "kind": "quasi_identifier",
                        "lower": REFERENCE_YEAR - 100,
                        "upper": REFERENCE_YEAR,
                        "generalise": "band:5",
                    },
                    "sex": {"type": "string", "kind": "quasi_identifier", "public_keys": list(SEXES)},
                    **_geo_columns(geo),
                    "pc6": {"type": "string", "kind": "quasi_identifier", "generalise": "prefix:4"},
                    "household_type": {"type": "string", "kind": "attribute", "public_keys": list(HOUSEHOLD_TYPES)},
                    "income": {"type": "integer", "kind": "sensitive", "lower": 0, "upper": 250_000},
                },
            },
            "bijstand": _record_dataset(
                geo,
                "Bijstandsuitkeringen (Participatiewet), per uitkeringsperiode",
                "bijstand",
                max_contributions=2,
                uitkering_per_maand={"type": "integer", "kind": "sensitive", "lower": 0, "upper": 2500},
            ),
            "jeugdzorg": _record_dataset(
                geo,
                "Jeugdhulptrajecten (Jeugdwet)",
                "jeugdzorg",
                max_contributions=3,
                # The contracted provider follows its clients' trajectories: who (a pseudonym), where
                # (wijk), since when (the year) and which care; not the buurt, the end or the costs. A
                # pseudonym links a person's records, so the classes are of persons (see README).
                exports={
                    "jeugdhulp-evaluatie": {
                        "columns": ["person_id", "wijk", "start_date", "zorgvorm"],
                        "l_diversity": {"column": "zorgvorm", "l": 2},
                    }
                },
                zorgvorm={"type": "string", "kind": "sensitive", "public_keys": list(JEUGDZORG_VORMEN)},
                kosten={"type": "integer", "kind": "sensitive", "lower": 0, "upper": 150_000},
            ),
            "wmo": _record_dataset(
                geo,
                "Wmo-voorzieningen (Wet maatschappelijke ondersteuning)",
                "wmo",
                max_contributions=3,
                voorziening={"type": "string", "kind": "sensitive", "public_keys": list(WMO_VOORZIENINGEN)},
                kosten={"type": "integer", "kind": "sensitive", "lower": 0, "upper": 60_000},
            ),
            "kerncijfers": {
                "description": "Kerncijfers wijken (CBS-stijl, openbaar): inwoners, huishoudens, oppervlakte",
                "kind": "public",
                "source": {"kind": "parquet", "path": "kerncijfers.parquet"},
                "columns": {
                    "wijk": {"type": "string", "description": "CBS wijkcode"},
                    "wijknaam": {"type": "string"},
                    "inwoners": {"type": "integer"},
                    "huishoudens": {"type": "integer"},
                    "oppervlakte_ha": {"type": "float"},
                },
            },
            "woninginbraak": {
                "description": "Woninginbraken (incl. pogingen) per buurt; privacy unit is het slachtoffer",
                "source": {"kind": "parquet", "path": "woninginbraak.parquet"},
                "privacy_unit": "person_id",
                "unit_space": "person",
                "max_contributions": 2,
                "actions": ["aggregate"],
                "columns": {
                    "incident_id": {"type": "string", "kind": "identifier"},
                    "person_id": {"type": "string", "kind": "identifier"},
                    **_geo_columns(geo),
                    "pc6": {"type": "string", "kind": "quasi_identifier"},
                    "datum": {"type": "date", "kind": "attribute"},
                    "poging": {"type": "boolean", "kind": "attribute"},
                },
            },
        },
    }
