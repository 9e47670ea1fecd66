"""A real gateway for the client's tests: the small demo Voorbeeldstad, served by uvicorn on a loopback
port, talked to over HTTP as an analyst would.

The demo is built once per session (``datapoort demo --no-serve``); each served gateway runs on a copy
of it, so a test that exhausts a budget (``fresh_gateway``) spoils nothing for the others, which share
one gateway per module (``served``) and so compare budgets before and after rather than absolutely.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from typer.testing import CliRunner

from gateway.cli import app
from gateway.http.app import create_app
from gateway.settings import Settings

PURPOSE = "beleidsinformatie"
EXPORT_PURPOSE = "jeugdhulp-evaluatie"
RESIDENTS = 1200


@dataclass(frozen=True)
class Served:
    url: str
    data_dir: Path
    keys: dict[str, str]


@contextmanager
def _without_datapoort_environment() -> Iterator[None]:
    """The demo and its settings from their data dir alone, whatever the shell exports."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("DATAPOORT_") and not name.startswith("DATAPOORT_TEST_"):
                patch.delenv(name)
        yield


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("client-demo")
    with _without_datapoort_environment():
        result = CliRunner().invoke(
            app, ["demo", "--data-dir", str(directory), "--residents", str(RESIDENTS), "--no-serve"]
        )
    assert result.exit_code == 0, result.output
    with closing(sqlite3.connect(directory / "state.db")) as connection, connection:
        # A gemeente this small cannot meet the export grant's k = 10 (as in tests/gateway/extract).
        connection.execute("UPDATE \"grant\" SET k_anonymity = 2 WHERE action = 'export'")
    return directory


@contextmanager
def serving(template: Path, directory: Path) -> Iterator[Served]:
    """A copy of the demo at ``directory``, served until the block ends."""
    shutil.copytree(template, directory)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    with _without_datapoort_environment():
        # The rate limit is lifted: the tests and the overhead measurement ask in quick succession.
        settings = Settings(
            _env_file=None, data_dir=directory, port=port, rate_limit_per_second=1000, rate_limit_burst=1000
        )
        application = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(application, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start")
        time.sleep(0.02)
    try:
        keys = json.loads((directory / "demo-keys.json").read_text())
        yield Served(url=f"http://127.0.0.1:{port}", data_dir=directory, keys=keys)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def served(demo_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One gateway for a module's tests; budgets they spend add up."""
    with serving(demo_template, tmp_path_factory.mktemp("served") / "demo") as gateway:
        yield gateway


@pytest.fixture
def fresh_gateway(demo_template: Path, tmp_path: Path) -> Iterator[Served]:
    """A gateway of its own, for a test that must start from full budgets."""
    with serving(demo_template, tmp_path / "demo") as gateway:
        yield gateway
