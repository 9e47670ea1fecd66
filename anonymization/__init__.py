"""Differential privacy and pseudonymisation, as a pure library.

This package never imports the web framework or the database layer: it receives numbers and
returns numbers, so its guarantees can be read and tested without the rest of Datapoort.
"""

from anonymization._counts import MECHANISM_DISCRETE_LAPLACE, CountMechanism, NoisyCounts
from anonymization._quantiles import MECHANISM_NOISY_MIN_EXPONENTIAL, QuantileMechanism, candidate_grid
from anonymization.errors import AnonymizationError, InvalidPrivacyParameter

__all__ = [
    "MECHANISM_DISCRETE_LAPLACE",
    "MECHANISM_NOISY_MIN_EXPONENTIAL",
    "AnonymizationError",
    "CountMechanism",
    "InvalidPrivacyParameter",
    "NoisyCounts",
    "QuantileMechanism",
    "candidate_grid",
]
