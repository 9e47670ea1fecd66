"""Generalisation rules and the reference k-anonymity / l-diversity check."""

from __future__ import annotations

from datetime import date

import pytest

from anonymization import InvalidPrivacyParameter, Rule, small_classes


@pytest.mark.parametrize(
    ("rule", "value", "expected"),
    [
        ("band:5", 1983, "1980-1984"),
        ("band:5", 1980, "1980-1984"),
        ("band:10", -3, "-10--1"),
        ("prefix:4", "1234AB", "1234"),
        ("month", date(2026, 11, 30), "2026-11"),
        ("year", date(2026, 11, 30), "2026"),
        ("band:5", None, None),
    ],
)
def test_rules_generalise(rule: str, value: object, expected: str | None) -> None:
    parsed = Rule.parse(rule)
    assert parsed.apply(value) == expected
    assert parsed.describe() == rule


@pytest.mark.parametrize("rule", ["band:0", "band", "prefix:0", "week", "band:5; DROP TABLE x", ""])
def test_unknown_rules_are_refused(rule: str) -> None:
    with pytest.raises(InvalidPrivacyParameter):
        Rule.parse(rule)


def test_small_classes_count_distinct_units_and_sensitive_values() -> None:
    records = [("a", "x", "u1"), ("a", "x", "u1"), ("a", "y", "u2"), ("b", "x", "u3")]
    assert small_classes(records, quasi_identifiers=[0], unit=2, k=2) == {("b",): 1}
    assert small_classes(records, quasi_identifiers=[0], unit=2, k=1, sensitive=1, l_diversity=2) == {("b",): 1}
    assert small_classes(records, quasi_identifiers=[0], unit=2, k=1) == {}
