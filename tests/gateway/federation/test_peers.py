"""The peer register's rules and the peer credential files."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

from gateway.exceptions import ConfigurationError
from gateway.keys.peer_credentials import credential_path, read_credential, write_credential
from gateway.store.database import session_factory
from policies import peers
from policies.exceptions import PolicyConflict


@pytest.mark.parametrize(
    ("url", "tls", "ca_file"),
    [
        ("http://peer.example.nl", "verify", None),  # plain HTTP to another host
        ("http://10.0.0.5:8000", "plain_loopback", None),  # plain HTTP only to this host
        ("https://peer.example.nl", "plain_loopback", None),
        ("https://user:secret@peer.example.nl", "verify", None),
        ("https://peer.example.nl?x=1", "verify", None),
        ("https://peer.example.nl", "ca_file", None),
        ("https://peer.example.nl", "verify", "/etc/ca.pem"),
        ("https://peer.example.nl", "insecure", None),
    ],
)
def test_a_peer_is_reached_over_https_or_plain_http_on_this_host_only(url: str, tls: str, ca_file: str | None) -> None:
    with pytest.raises(PolicyConflict):
        peers.check_url(url, tls, ca_file)


def test_valid_peer_urls_pass() -> None:
    peers.check_url("https://datapoort.dorpsveen.nl", "verify", None)
    peers.check_url("https://datapoort.dorpsveen.nl:8443/gw", "ca_file", "/etc/dorpsveen-ca.pem")
    peers.check_url("http://127.0.0.1:8101", "plain_loopback", None)
    peers.check_url("http://[::1]:8101", "plain_loopback", None)


def test_registering_and_disabling_a_peer_is_described_for_the_audit_log(sessions: sessionmaker[Session]) -> None:
    now = datetime.now(UTC)
    with sessions() as session:
        change = peers.register_peer(
            session, name="dorpsveen", gemeente="Dorpsveen", url="https://gw.dorpsveen.nl/", tls="verify",
            ca_file=None, now=now,
        )  # fmt: skip
        assert (change.after or {})["url"] == "https://gw.dorpsveen.nl"
        assert "key" not in str(change.describe()).lower()  # no credential in a change
        with pytest.raises(PolicyConflict):
            peers.register_peer(
                session, name="dorpsveen", gemeente="x", url="https://x.nl", tls="verify", ca_file=None, now=now
            )
        peers.disable_peer(session, name="dorpsveen", now=now)
        assert peers.active_peers(session) == []
        session.rollback()


def test_a_credential_file_is_private_and_refused_when_others_can_read_it(tmp_path: Path) -> None:
    path = write_credential(tmp_path, "dorpsveen", "dpk_secret\n")
    assert path == credential_path(tmp_path, "dorpsveen")
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    assert oct(path.parent.stat().st_mode & 0o777) == oct(0o700)
    assert read_credential(tmp_path, "dorpsveen") == "dpk_secret"
    os.chmod(path, 0o640)
    with pytest.raises(ConfigurationError, match="readable by others"):
        read_credential(tmp_path, "dorpsveen")
    with pytest.raises(ConfigurationError, match="cannot be read"):
        read_credential(tmp_path, "havenmond")


def test_the_demo_of_three_gemeenten_peers_each_with_the_others(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "demo", "--data-dir", str(tmp_path), "--gemeenten", "3",
         "--residents", "2000", "--no-serve", "--port", "8700"],
        capture_output=True, text=True, env={k: v for k, v in os.environ.items() if not k.startswith("DATAPOORT_")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "datapoort compare" in result.stdout
    for index, port in enumerate((8700, 8701, 8702)):
        directory = tmp_path / f"gemeente-{index + 1}"
        with session_factory(create_engine(f"sqlite:///{directory / 'state.db'}"))() as session:
            assert isinstance(session, Session)
            registered = {peer.name: peer.url for peer in peers.active_peers(session)}
        others = {f"gemeente-{other + 1}": f"http://127.0.0.1:{8700 + other}" for other in range(3) if other != index}
        assert registered == others, port
        for name in others:
            assert read_credential(directory, name).startswith("dpk_")
