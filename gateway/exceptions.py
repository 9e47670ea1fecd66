"""Exceptions raised by the gateway itself (the domains have their own). Mapped to HTTP in ``errors.py``.

GatewayError
 ├── CatalogError          the catalog file is missing or invalid (operator error, reported at start-up)
 ├── InvalidDatasetChange  a dataset added or changed while running that the catalog cannot take
 ├── UnknownDataset        the query names a dataset the catalog does not hold or the action cannot use
 │    └── DatasetNotFound  a dataset asked for by name that the caller may not use (404)
 ├── UnknownColumn         the query names a column the dataset does not have
 ├── QueryNotSupported     valid SQL, but outside the subset Datapoort answers; names the construct
 ├── InvalidQuery          the query cannot be parsed or its parameters are out of range
 ├── InvalidExtract        an extract specification the dataset's export profile cannot serve
 ├── NotFound              a pseudonym or person the gateway holds nothing about
 ├── ConfigurationError    a capability the operator has not configured (e.g. no pseudonym secrets)
 ├── FormRejected          a console form without its CSRF token, or with another session's
 └── SourceUnavailable     the data source failed to answer
"""

from __future__ import annotations


class GatewayError(Exception):
    code = "gateway_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CatalogError(GatewayError):
    code = "catalog_invalid"


class InvalidDatasetChange(GatewayError):
    code = "invalid_dataset"


class UnknownDataset(GatewayError):
    code = "unknown_dataset"


class DatasetNotFound(UnknownDataset):
    """A dataset asked for by name (``GET /v1/datasets/{name}``) that the caller may not use, or that
    does not exist: the two are not told apart."""

    code = "dataset_not_found"


class UnknownColumn(GatewayError):
    code = "unknown_column"


class QueryNotSupported(GatewayError):
    code = "query_not_supported"


class InvalidQuery(GatewayError):
    code = "invalid_query"


class InvalidExtract(GatewayError):
    code = "invalid_extract"


class NotFound(GatewayError):
    code = "not_found"


class FormRejected(GatewayError):
    """A console form that did not come from a page of this session (cross-site request forgery)."""

    code = "csrf_failed"


class ConfigurationError(GatewayError):
    code = "not_configured"


class SourceUnavailable(GatewayError):
    code = "source_unavailable"


class StatementTimeout(SourceUnavailable):
    """The statement ran past its deadline and was stopped (after the read began: it stays charged)."""

    code = "statement_timeout"
