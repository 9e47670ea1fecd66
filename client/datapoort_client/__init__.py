"""The analysts' Python client of a Datapoort gateway: answers as DataFrames with their intervals.

    from datapoort_client import Gateway

    with Gateway("https://datapoort.gemeente.nl", key) as gateway:
        df = gateway.query("SELECT wijk, COUNT(*) AS n FROM jeugdzorg GROUP BY wijk", purpose="beleidsinformatie")
    df[["wijk", "n", "n_lower", "n_upper"]], df.attrs["privacy"]["epsilon_spent"]

It speaks only the gateway's public HTTP API and imports nothing of the server, so it installs alone
(``pip install ./client``; ``[polars]`` for polars DataFrames).
"""

from datapoort_client._errors import (
    AuthenticationFailed,
    BudgetExhausted,
    Conflict,
    ConnectionFailed,
    DatapoortError,
    InvalidExtract,
    InvalidQuery,
    InvalidRequest,
    NotFound,
    Overloaded,
    PolicyDenied,
    QueryNotSupported,
    RateLimited,
    RequestTooLarge,
    ServerError,
    StatementTimeout,
    Unavailable,
    UnknownColumn,
    UnknownDataset,
)
from datapoort_client._gateway import VERSION as __version__
from datapoort_client._gateway import Gateway
from datapoort_client._results import Extract
from datapoort_client._retry import RetryPolicy

__all__ = [
    "AuthenticationFailed",
    "BudgetExhausted",
    "Conflict",
    "ConnectionFailed",
    "DatapoortError",
    "Extract",
    "Gateway",
    "InvalidExtract",
    "InvalidQuery",
    "InvalidRequest",
    "NotFound",
    "Overloaded",
    "PolicyDenied",
    "QueryNotSupported",
    "RateLimited",
    "RequestTooLarge",
    "RetryPolicy",
    "ServerError",
    "StatementTimeout",
    "Unavailable",
    "UnknownColumn",
    "UnknownDataset",
    "__version__",
]
