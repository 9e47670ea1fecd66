"""``Gateway``: one analyst's connection to a Datapoort gateway, over its public HTTP API only.

Every method is one route (``/v1/query``, ``/v1/query/estimate``, ``/v1/budget``, ``/v1/datasets``,
``/v1/extracts``, ``/v1/compare``); answers come back as DataFrames with their privacy report, refusals as
the typed exceptions of ``_errors``. Which calls are sent again, and when, is ``_retry``'s rule.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, overload
from urllib.parse import quote

import httpx
import pandas as pd

from datapoort_client import _frames
from datapoort_client._errors import ConnectionFailed, DatapoortError, from_response
from datapoort_client._results import Extract
from datapoort_client._retry import RetryPolicy, send

if TYPE_CHECKING:
    import polars as pl

VERSION = "0.1.0"
ExtractFormat = Literal["csv", "jsonl", "parquet"]


class Gateway:
    """A connection to the gateway at ``url`` (default: ``DATAPOORT_URL``) with the API ``key``
    (default: ``DATAPOORT_API_KEY``). Use it as a context manager, or ``close()`` it.

    ``retries`` bounds how often a read or an estimate is sent again (never a query, an extract or a
    comparison: they spend). ``transport`` replaces httpx's network transport, e.g. with an
    ``httpx.MockTransport`` in tests. ``last_report`` holds the privacy report of the last answer, for
    either backend (a polars DataFrame has no ``attrs`` to carry it).
    """

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 2,
        verify: bool | str | ssl.SSLContext = True,
        backoff: float = 0.2,
        max_retry_wait: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        url = url or os.environ.get("DATAPOORT_URL")
        key = key if key is not None else os.environ.get("DATAPOORT_API_KEY")
        if not url:
            raise ValueError("give the gateway's url (or set DATAPOORT_URL)")
        if not key:
            raise ValueError("give your API key (or set DATAPOORT_API_KEY)")
        if retries < 0:
            raise ValueError("retries cannot be negative")
        self.url = url.rstrip("/")
        self.retry_policy = RetryPolicy(retries=retries, backoff=backoff, max_wait=max_retry_wait)
        self.last_report: dict[str, Any] | None = None
        """The privacy report of the last query or comparison (what ``df.attrs["privacy"]`` holds)."""
        if isinstance(verify, str):  # a CA bundle: as a context, which httpx no longer takes as a path
            verify = ssl.create_default_context(cafile=verify)
        self._client = httpx.Client(
            base_url=self.url,
            headers={
                "Authorization": f"Bearer {key}",
                "Accept": "application/json",
                "User-Agent": f"datapoort-client/{VERSION}",
            },
            timeout=timeout,
            verify=verify,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"Gateway({self.url!r})"  # never the key

    def __enter__(self) -> Gateway:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    # The questions: query, estimate, compare.

    @overload
    def query(
        self,
        sql: str | None = None,
        *,
        plan: Mapping[str, Any] | None = None,
        purpose: str,
        epsilon: float | None = None,
        delta: float | None = None,
        accuracy: float | None = None,
        confidence: float | None = None,
        backend: Literal["pandas"] = "pandas",
    ) -> pd.DataFrame: ...

    @overload
    def query(
        self,
        sql: str | None = None,
        *,
        plan: Mapping[str, Any] | None = None,
        purpose: str,
        epsilon: float | None = None,
        delta: float | None = None,
        accuracy: float | None = None,
        confidence: float | None = None,
        backend: Literal["polars"],
    ) -> pl.DataFrame: ...

    def query(
        self,
        sql: str | None = None,
        *,
        plan: Mapping[str, Any] | None = None,
        purpose: str,
        epsilon: float | None = None,
        delta: float | None = None,
        accuracy: float | None = None,
        confidence: float | None = None,
        backend: _frames.Backend = "pandas",
    ) -> pd.DataFrame | pl.DataFrame:
        """Ask one differentially private question (``sql``, or a JSON ``plan``) for ``purpose``.

        Spend ``epsilon`` (default: the gateway's), or ask for ``accuracy``: every count and sum within
        ± that of the truth with ``confidence`` (default 0.95). One row per group: the group columns,
        and per released value its column with ``<name>_lower`` and ``<name>_upper``, the interval the
        gateway reported (null where it reports none). The privacy report (``epsilon_spent``,
        ``delta_spent``, ``aggregates`` with each mechanism, ``budget`` with ``epsilon_remaining``, and
        ``request_id``) is in ``df.attrs["privacy"]`` (pandas) and ``self.last_report``. Never retried.
        """
        _frames.check_backend(backend)
        body = question(sql, plan, purpose, epsilon, delta, accuracy, confidence)
        answer = self._call("POST", "/v1/query", body, idempotent=False)
        report = {**answer["privacy"], "request_id": answer.get("request_id")}
        data, bounds = _frames.released_columns(answer["columns"], answer["rows"], report.get("aggregates") or {})
        return self._released(_frames.frame(data, backend, bounds), report)

    def estimate(
        self,
        sql: str | None = None,
        *,
        plan: Mapping[str, Any] | None = None,
        purpose: str,
        epsilon: float | None = None,
        delta: float | None = None,
        accuracy: float | None = None,
        confidence: float | None = None,
    ) -> dict[str, Any]:
        """What the question would cost (``epsilon``, ``delta``), how accurate it would be per aggregate,
        and whether the budget affords it (``budget.affordable``): no data is read, nothing is spent, so
        it is retried like a read."""
        body = question(sql, plan, purpose, epsilon, delta, accuracy, confidence)
        answer: dict[str, Any] = self._call("POST", "/v1/query/estimate", body, idempotent=True)
        return answer

    @overload
    def compare(
        self,
        sql: str | None = None,
        *,
        plan: Mapping[str, Any] | None = None,
        purpose: str,
        epsilon: float | None = None,
        delta: float | None = None,
        accuracy: float | None = None,
        confidence: float | None = None,
        peers: Iterable[str] | None = None,
        backend: Literal["pandas"] = "pandas",
    ) -> pd.DataFrame: ...

    @overload
    def compare(
        self,
        sql: str | None = None,
        *,
        plan: Mapping[str, Any] | None = None,
        purpose: str,
        epsilon: float | None = None,
        delta: float | None = None,
        accuracy: float | None = None,
        confidence: float | None = None,
        peers: Iterable[str] | None = None,
        backend: Literal["polars"],
    ) -> pl.DataFrame: ...

    def compare(
        self,
        sql: str | None = None,
        *,
        plan: Mapping[str, Any] | None = None,
        purpose: str,
        epsilon: float | None = None,
        delta: float | None = None,
        accuracy: float | None = None,
        confidence: float | None = None,
        peers: Iterable[str] | None = None,
        backend: _frames.Backend = "pandas",
    ) -> pd.DataFrame | pl.DataFrame:
        """Ask one question of this gemeente and of its peer gateways (``peers``; default every enabled
        one), each under its own policies and budget. One long table: ``gemeente``, ``peer`` (null for
        this one), ``status``, the answer's columns with their bounds, and ``error``/``detail`` for a
        gemeente that did not answer (one row, values null). The report: this gemeente's privacy
        report with ``request_id``, ``trace_id`` and ``gemeenten`` (each one's status, request id and
        ``epsilon_spent``). Never retried."""
        _frames.check_backend(backend)
        body = question(sql, plan, purpose, epsilon, delta, accuracy, confidence)
        if peers is not None:
            body["peers"] = list(peers)
        answer = self._call("POST", "/v1/compare", body, idempotent=False)
        gemeenten: list[dict[str, Any]] = answer.get("gemeenten") or []
        local = next((entry for entry in gemeenten if entry.get("peer") is None), {})
        report = {
            **(local.get("privacy") or {}),
            "request_id": answer.get("request_id"),
            "trace_id": answer.get("trace_id"),
            "gemeenten": [
                {name: entry.get(name) for name in ("gemeente", "peer", "status", "request_id", "epsilon_spent",
                                                    "error", "detail", "elapsed_ms")}
                for entry in gemeenten
            ],
        }  # fmt: skip
        data, bounds = _frames.compare_columns(gemeenten)
        return self._released(_frames.frame(data, backend, bounds), report)

    def _released(self, df: pd.DataFrame | pl.DataFrame, report: dict[str, Any]) -> pd.DataFrame | pl.DataFrame:
        self.last_report = report
        if isinstance(df, pd.DataFrame):
            df.attrs["privacy"] = report
        return df

    # What the caller may use and has left.

    @overload
    def budget(self, *, backend: Literal["pandas"] = "pandas") -> pd.DataFrame: ...

    @overload
    def budget(self, *, backend: Literal["polars"]) -> pl.DataFrame: ...

    def budget(self, *, backend: _frames.Backend = "pandas") -> pd.DataFrame | pl.DataFrame:
        """Your budgets, one row per unit space and grant: ``epsilon_per_period``, ``epsilon_spent``,
        ``epsilon_remaining`` (and delta's) this ``period``, with the space's ``caps``. Retried."""
        _frames.check_backend(backend)
        answer = self._call("GET", "/v1/budget", None, idempotent=True)
        return _frames.records_frame(answer.get("budgets") or [], backend)

    def datasets(self) -> list[dict[str, Any]]:
        """The datasets you may use, with their privacy unit, actions, purposes and budget caps. Retried."""
        answer = self._call("GET", "/v1/datasets", None, idempotent=True)
        found: list[dict[str, Any]] = answer.get("datasets") or []
        return found

    def dataset(self, name: str) -> dict[str, Any]:
        """One dataset: its columns, kinds, bounds and public keys, and what can be asked of each."""
        answer: dict[str, Any] = self._call("GET", f"/v1/datasets/{quote(name, safe='')}", None, idempotent=True)
        return answer

    # Partners: record-level extracts.

    def extract(
        self,
        dataset: str,
        *,
        purpose: str,
        columns: Iterable[str],
        path: str | os.PathLike[str],
        format: ExtractFormat = "csv",
        where: Mapping[str, Any] | None = None,
        chunk_size: int = 1 << 16,
        **filters: Any,
    ) -> Extract:
        """Stream a pseudonymised, k-anonymous extract of ``columns`` to ``path``, ``chunk_size`` bytes
        at a time (never whole in memory); it lands at ``path`` only once complete. Rows are chosen by
        ``where`` (the JSON plan's condition grammar) and/or ``column=value`` ``filters`` (a list or
        tuple: one of; ``None``: null). Returns the ``X-Datapoort-*`` facts. Never retried: each
        extract is recorded as a release."""
        body: dict[str, Any] = {"dataset": dataset, "purpose": purpose, "columns": list(columns), "format": format}
        condition = _condition(where, filters)
        if condition is not None:
            body["where"] = condition
        target = Path(path)
        request = self._client.build_request("POST", "/v1/extracts", json=body)
        response = send(self._client, request, self.retry_policy, idempotent=False, stream=True)
        try:
            if not response.is_success:
                response.read()
                raise from_response(response)
            written = _stream_to(response, target, chunk_size)
            return Extract.from_headers(target, response.headers, written)
        finally:
            response.close()

    def _call(self, method: str, path: str, body: dict[str, Any] | None, *, idempotent: bool) -> Any:
        request = self._client.build_request(method, path, json=body)
        response = send(self._client, request, self.retry_policy, idempotent=idempotent)
        if not response.is_success:
            raise from_response(response)
        try:
            return response.json()
        except ValueError as exc:
            raise DatapoortError("invalid_answer", "the gateway's answer is not JSON", response.status_code) from exc


def question(
    sql: str | None,
    plan: Mapping[str, Any] | None,
    purpose: str,
    epsilon: float | None,
    delta: float | None,
    accuracy: float | None,
    confidence: float | None,
) -> dict[str, Any]:
    """The body of ``/v1/query`` (and estimate, compare); the gateway's own one-of rules, checked here
    first so that a wrong call costs no round trip."""
    if (sql is None) == (plan is None):
        raise ValueError("give exactly one of sql and plan")
    if epsilon is not None and accuracy is not None:
        raise ValueError("give epsilon or accuracy, not both")
    if confidence is not None and accuracy is None:
        raise ValueError(
            "confidence goes with accuracy=: the gateway sets the epsilon to meet it; with epsilon, "
            "intervals are reported at the gateway's confidence (0.95), in the report's 'confidence'"
        )
    body: dict[str, Any] = {"purpose": purpose}
    if sql is not None:
        body["sql"] = sql
    else:
        body["plan"] = dict(plan or {})
    if epsilon is not None:
        body["epsilon"] = float(epsilon)  # the gateway takes numbers strictly: 1 and 1.0 alike, never "1"
    if delta is not None:
        body["delta"] = float(delta)
    if accuracy is not None:
        body["accuracy"] = {"half_width": float(accuracy)}
        if confidence is not None:
            body["accuracy"]["confidence"] = float(confidence)
    return body


def _condition(where: Mapping[str, Any] | None, filters: Mapping[str, Any]) -> dict[str, Any] | None:
    """``where`` and the ``column=value`` filters as one condition of the plan grammar."""
    parts: list[dict[str, Any]] = [dict(where)] if where is not None else []
    for column, value in filters.items():
        if value is None:
            parts.append({"column": column, "op": "is_null"})
        elif isinstance(value, list | tuple | set | frozenset):
            parts.append({"column": column, "op": "in", "values": list(value)})
        else:
            parts.append({"column": column, "op": "=", "value": value})
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"and": parts}


def _stream_to(response: httpx.Response, target: Path, chunk_size: int) -> int:
    """Write the body to a ``.part`` file beside ``target`` and move it there when complete; a broken
    stream leaves nothing behind that could pass for the extract."""
    partial = target.with_name(target.name + ".part")
    written = 0
    try:
        with partial.open("wb") as handle:
            for chunk in response.iter_bytes(chunk_size):
                handle.write(chunk)
                written += len(chunk)
    except httpx.HTTPError as exc:
        partial.unlink(missing_ok=True)
        raise ConnectionFailed("connection_failed", f"the extract broke off after {written} bytes ({exc})") from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)
    return written
