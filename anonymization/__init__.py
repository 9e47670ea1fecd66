"""Differential privacy and pseudonymisation, as a pure library.

This package never imports the web framework or the database layer: it receives numbers and
returns numbers, so its guarantees can be read and tested without the rest of Datapoort.
"""

from anonymization._counts import MECHANISM_DISCRETE_LAPLACE, CountMechanism, NoisyCounts
from anonymization.errors import AnonymizationError, InvalidPrivacyParameter

__all__ = [
    "MECHANISM_DISCRETE_LAPLACE",
    "AnonymizationError",
    "CountMechanism",
    "InvalidPrivacyParameter",
    "NoisyCounts",
]
