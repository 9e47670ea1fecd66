"""The fingerprints an extract keeps: every one added is found, nothing else is."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from audit.extracts import FingerprintCollector, _contains

_FINGERPRINTS = st.lists(st.integers(0, 2**64 - 1), max_size=300)


@given(batches=st.lists(_FINGERPRINTS, max_size=6), others=_FINGERPRINTS)
def test_the_packed_fingerprints_hold_exactly_what_was_added(batches: list[list[int]], others: list[int]) -> None:
    collector = FingerprintCollector(expected=10)  # smaller than what comes: it grows
    for batch in batches:
        collector.add(np.array(batch, dtype=np.uint64).astype(">u8"))
    packed = bytes(collector.packed())
    added = {value for batch in batches for value in batch}
    assert len(packed) == 8 * sum(len(batch) for batch in batches)
    assert all(_contains(packed, value) for value in added)
    assert not any(_contains(packed, value) for value in set(others) - added)
