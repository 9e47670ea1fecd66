"""What a call returns besides a DataFrame: an extract's facts, from the headers it came with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

HEADER_PREFIX = "x-datapoort-"


@dataclass(frozen=True, slots=True)
class Extract:
    """A pseudonymised, k-anonymous extract written to ``path``, with what the gateway said of it in its
    ``X-Datapoort-*`` headers (known before the first record: the records are counted first)."""

    path: Path
    extract_id: str
    records: int
    """Records released (``X-Datapoort-Records``): the rows of the file."""
    k: int
    suppressed: int
    """Records left out because their class was smaller than ``k`` (or not l-diverse)."""
    l_diversity: str | None
    generalisations: str
    pseudonym_version: int | None
    bytes_written: int
    headers: dict[str, str]
    """Every ``X-Datapoort-*`` header, by its name without the prefix (``records``, ``extract-id`` ...)."""

    @classmethod
    def from_headers(cls, path: Path, headers: Mapping[str, str], bytes_written: int) -> Extract:
        facts = {
            name.lower()[len(HEADER_PREFIX) :]: value
            for name, value in headers.items()
            if name.lower().startswith(HEADER_PREFIX)
        }
        version = facts.get("pseudonym-version", "")
        return cls(
            path=path,
            extract_id=facts.get("extract-id", ""),
            records=int(facts.get("records", "0")),
            k=int(facts.get("k", "0")),
            suppressed=int(facts.get("suppressed", "0")),
            l_diversity=facts.get("l-diversity") or None,
            generalisations=facts.get("generalisations", ""),
            pseudonym_version=int(version) if version.isdigit() else None,
            bytes_written=bytes_written,
            headers=facts,
        )
