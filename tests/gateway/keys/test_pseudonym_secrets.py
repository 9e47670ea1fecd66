"""Master secrets: from a private file or the environment, versioned; a file others can read stops the
gateway from starting."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from gateway.exceptions import ConfigurationError
from gateway.http.app import create_app
from gateway.keys.pseudonym_secrets import add_version, load_master_secrets
from gateway.settings import DEFAULT_PSEUDONYM_KEYS, Settings


def _settings(directory: Path, **values: object) -> Settings:
    return Settings(_env_file=None, data_dir=directory, **values)  # type: ignore[call-arg]


def test_rotation_adds_versions_to_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / DEFAULT_PSEUDONYM_KEYS
    assert add_version(path) == 1
    assert add_version(path) == 2
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secrets = load_master_secrets(_settings(tmp_path))
    assert sorted(secrets) == [1, 2]
    assert secrets[1].secret != secrets[2].secret
    assert len(secrets[2].secret) == 32


def test_secrets_can_come_from_the_environment(tmp_path: Path) -> None:
    one, two = base64.b64encode(os.urandom(32)).decode(), base64.b64encode(os.urandom(48)).decode()
    secrets = load_master_secrets(_settings(tmp_path, pseudonym_master_keys=SecretStr(f"1:{one}, 3:{two}")))
    assert sorted(secrets) == [1, 3]
    assert secrets[3].secret == base64.b64decode(two)


@pytest.mark.parametrize("content", ['{"1": "c2hvcnQ="}', '{"x": "AAAA"}', "{}", "not json", '{"1": "not base64!"}'])
def test_bad_key_files_are_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / DEFAULT_PSEUDONYM_KEYS
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(ConfigurationError):
        load_master_secrets(_settings(tmp_path))


def test_without_secrets_no_extract_is_configured(tmp_path: Path) -> None:
    assert load_master_secrets(_settings(tmp_path)) == {}


def test_the_gateway_refuses_to_start_with_a_key_file_others_can_read(demo_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / DEFAULT_PSEUDONYM_KEYS
    add_version(path)
    path.chmod(0o640)
    settings = _settings(tmp_path, catalog=demo_dir / "catalog.yaml")
    with pytest.raises(ValueError, match="chmod 600"), TestClient(create_app(settings)):
        pass
    assert json.loads(path.read_text())  # untouched


@pytest.mark.parametrize("value", ["1:AAAA,garbage", "1:{0},1:{0}", ""])
def test_malformed_secrets_in_the_environment_are_refused(tmp_path: Path, value: str) -> None:
    secret = base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(ConfigurationError):
        load_master_secrets(_settings(tmp_path, pseudonym_master_keys=SecretStr(value.format(secret))))
