"""Differential privacy and pseudonymisation, as a pure library.

This package never imports the web framework or the database layer: it receives numbers and
returns numbers, so its guarantees can be read and tested without the rest of Datapoort.
"""

from anonymization._counts import MECHANISM_DISCRETE_LAPLACE, CountMechanism, NoisyCounts
from anonymization._generalisation import Rule, small_classes
from anonymization._pseudonyms import (
    PSEUDONYM_LENGTH,
    MasterSecret,
    PseudonymBatch,
    Pseudonymiser,
    derive_key,
    fingerprint_of,
)
from anonymization._quantiles import MECHANISM_NOISY_MIN_EXPONENTIAL, QuantileMechanism, candidate_grid
from anonymization._selection import MECHANISM_LAPLACE_THRESHOLD, KeySelection, SelectedKeys
from anonymization.errors import AnonymizationError, InvalidPrivacyParameter

__all__ = [
    "MECHANISM_DISCRETE_LAPLACE",
    "MECHANISM_LAPLACE_THRESHOLD",
    "MECHANISM_NOISY_MIN_EXPONENTIAL",
    "PSEUDONYM_LENGTH",
    "AnonymizationError",
    "CountMechanism",
    "InvalidPrivacyParameter",
    "KeySelection",
    "MasterSecret",
    "NoisyCounts",
    "PseudonymBatch",
    "Pseudonymiser",
    "QuantileMechanism",
    "Rule",
    "SelectedKeys",
    "candidate_grid",
    "derive_key",
    "fingerprint_of",
    "small_classes",
]
