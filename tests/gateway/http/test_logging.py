"""Log lines are JSON with the request's ids, and carry no keys, tokens or BSNs."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gateway.http.logging_setup import REDACTED, REQUEST_IDS, JsonFormatter, TextFormatter, log_config, scrub
from gateway.http.middleware import RequestContextMiddleware

API_KEY = "dpk_" + "a" * 68 + "bcdefgh"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbmFseXN0In0.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"
BSN = "123456782"
SECRETS = (API_KEY, JWT, BSN, "hunter2")


def _record(message: str, *args: object, exc_info: bool = False) -> logging.LogRecord:
    record = logging.LogRecord("datapoort.test", logging.WARNING, __file__, 1, message, args, None)
    if exc_info:
        try:
            raise ValueError(f"refused key {API_KEY} for {BSN}")
        except ValueError:
            record.exc_info = sys.exc_info()
    return record


def test_a_line_is_json_with_the_request_ids_and_no_secrets() -> None:
    ids = REQUEST_IDS.set(("f" * 32, "e" * 32))
    try:
        record = _record(
            "key %s token %s for BSN %s; headers {'authorization': 'Basic hunter2'}", API_KEY, JWT, BSN, exc_info=True
        )
        line = JsonFormatter().format(record)
    finally:
        REQUEST_IDS.reset(ids)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["request_id"] == "f" * 32
    assert parsed["trace_id"] == "e" * 32
    assert parsed["level"] == "WARNING"
    assert parsed["logger"] == "datapoort.test"
    assert parsed["time"].endswith("+00:00")
    assert "ValueError" in parsed["exception"]
    for secret in SECRETS:
        assert secret not in line, secret
    assert REDACTED in parsed["message"]
    assert REDACTED in parsed["exception"]


def test_outside_a_request_the_ids_are_null() -> None:
    parsed = json.loads(JsonFormatter().format(_record("started")))
    assert parsed["request_id"] is None
    assert parsed["trace_id"] is None


def test_what_is_scrubbed() -> None:
    assert scrub(f"Authorization: Bearer {API_KEY}") == f"Authorization: {REDACTED}"
    assert scrub("got bearer abc.def-ghi here") == f"got bearer {REDACTED} here"
    assert scrub(f"BSN {BSN} and 12345678") == f"BSN {REDACTED} and {REDACTED}"
    assert scrub(f"jwt={JWT};") == f"jwt={REDACTED};"
    # Not every number: counts, years, ports, the ids of requests stay.
    assert scrub("1200 rows in 2025 on port 8000, request 4f3a123456789b0c") == (
        "1200 rows in 2025 on port 8000, request 4f3a123456789b0c"
    )
    assert BSN not in TextFormatter().format(_record("BSN %s", BSN))


def test_the_middleware_gives_each_request_its_ids_also_on_worker_threads() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("datapoort.test.request")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    app = FastAPI()

    @app.get("/thread")
    def on_a_thread() -> dict[str, str]:
        logger.info("answering with key %s", API_KEY)
        return {}

    app.add_middleware(RequestContextMiddleware, instance="test")
    try:
        response = TestClient(app).get("/thread")
    finally:
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue().strip())
    assert line["request_id"] == response.headers["x-request-id"]
    assert line["trace_id"] == response.headers["traceparent"].split("-")[1]
    assert API_KEY not in stream.getvalue()
    assert REQUEST_IDS.get() is None  # reset after the request


def test_the_serve_config_routes_uvicorn_and_the_gateway_through_the_json_formatter() -> None:
    script = (
        "import logging, logging.config, sys;"
        "from gateway.http.logging_setup import log_config;"
        f"logging.config.dictConfig(log_config({'json'!r}));"
        f"logging.getLogger('uvicorn.error').info('key %s', {API_KEY!r});"
        f"logging.getLogger('datapoort.app').warning('Authorization: Bearer {JWT}')"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [line["logger"] for line in lines] == ["uvicorn.error", "datapoort.app"]
    assert API_KEY not in done.stderr
    assert JWT not in done.stderr
    assert log_config("text")["formatters"]["datapoort"]["()"].endswith("TextFormatter")


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("bsn123456782 asked", "asked"),
        ("BSN: 123.456.782", "BSN:"),
        ("the subject 1234 56 782", "the subject"),
        ("postgresql://datapoort:hunter2@db/state", "postgresql://datapoort:"),
        ("client_secret=s3cr3t&x=1", "client_secret="),
    ],
)
def test_secrets_as_people_write_them_are_scrubbed(text: str, kept: str) -> None:
    from gateway.http.logging_setup import scrub

    scrubbed = scrub(text)
    assert kept in scrubbed
    assert "[redacted]" in scrubbed
    for secret in ("123456782", "123.456.782", "1234 56 782", "hunter2", "s3cr3t"):
        assert secret not in scrubbed


def test_dates_and_hex_ids_are_left_alone() -> None:
    from gateway.http.logging_setup import scrub

    text = "at 2026-12-03 10:00:00 request 4f3a123456789b0c"
    assert scrub(text) == text
