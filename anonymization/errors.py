"""Exceptions raised by the anonymization library.

The tree::

    AnonymizationError            base; never raised directly
     └── InvalidPrivacyParameter  epsilon, sensitivity or bounds that would weaken or void the guarantee

Each exception carries a stable machine-readable ``code``; the gateway maps codes to HTTP responses.
"""

from __future__ import annotations


class AnonymizationError(Exception):
    code = "anonymization_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidPrivacyParameter(AnonymizationError):
    """Raised instead of building a mechanism whose guarantee would be void (e.g. epsilon <= 0)."""

    code = "invalid_privacy_parameter"
