"""The console's browser tests: Debian's Chromium driven by Playwright against a gateway served by uvicorn.

Chromium is never downloaded: ``make test`` installs Debian's package where it is absent. Without it these
tests skip and say why, except under ``DATAPOORT_REQUIRE_BROWSER=1`` (``.ci/run``), where that is a failure.
Screenshots of every page go to ``test-artifacts/console/`` at the repository's root.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from gateway.http.app import create_app
from gateway.keys.pseudonym_secrets import add_version
from gateway.settings import DEFAULT_PSEUDONYM_KEYS, DEFAULT_SNAPSHOT_SEED, Settings
from tests.gateway.conftest import provision_state

CHROMIUM = Path(os.environ.get("DATAPOORT_CHROMIUM", "/usr/bin/chromium"))
REQUIRE_BROWSER = os.environ.get("DATAPOORT_REQUIRE_BROWSER") == "1"
ARTIFACTS = Path(__file__).resolve().parents[4] / "test-artifacts" / "console"
# As the machine's notes advise: no background traffic, so a closed network cannot slow or fail a test.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        message = f"no Chromium at {CHROMIUM}: `make test` installs Debian's chromium where it can"
        if REQUIRE_BROWSER:
            pytest.fail(f"DATAPOORT_REQUIRE_BROWSER=1 but {message}")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Served:
    url: str
    keys: dict[str, str]
    settings: Settings
    demo_dir: Path
    violations: list[str] = field(default_factory=list)


def serve(settings: Settings, *, ssl_files: tuple[Path, Path] | None = None) -> Iterator[None]:
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=settings.port,
        log_level="warning",
        ssl_certfile=str(ssl_files[0]) if ssl_files else None,
        ssl_keyfile=str(ssl_files[1]) if ssl_files else None,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive(), "the gateway did not start"
        assert time.monotonic() < deadline, "the gateway did not start in time"
        time.sleep(0.05)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def gateway_settings(
    directory: Path, demo_dir: Path, demo_snapshots: Path, *, scheme: str = "http", **overrides: Any
) -> Settings:
    port = free_port()
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=directory,
        catalog=demo_dir / "catalog.yaml",
        instance="console",
        port=port,
        public_url=f"{scheme}://127.0.0.1:{port}",
        **overrides,
    )
    shutil.copytree(demo_snapshots / "snapshots", settings.snapshot_dir)
    shutil.copy2(demo_snapshots / DEFAULT_SNAPSHOT_SEED, settings.snapshot_seed_file)
    return settings


def provision(settings: Settings) -> dict[str, str]:
    keys = provision_state(settings.state_database_url, settings.data_dir, "console")
    add_version(settings.data_dir / DEFAULT_PSEUDONYM_KEYS)  # the partner's extracts need a master secret
    return keys


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1, made here with the cryptography package (the browser is told to trust
    it), so the TLS behaviour of the cookies can be seen."""
    from datetime import UTC, datetime, timedelta
    from ipaddress import IPv4Address

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    assert ssl.PROTOCOL_TLS_CLIENT  # the standard library's TLS is what uvicorn serves with
    return cert_path, key_path
