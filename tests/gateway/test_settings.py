"""Settings: the DATAPOORT_ prefix, derived defaults, and key files that must be private."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.settings import Settings


def test_environment_prefix_and_derived_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAPOORT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DATAPOORT_PORT", "9001")
    monkeypatch.delenv("DATAPOORT_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATAPOORT_CATALOG", raising=False)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.port == 9001
    assert settings.state_database_url == f"sqlite:///{tmp_path.resolve() / 'state.db'}"
    assert settings.catalog_path == tmp_path / "catalog.yaml"


def test_key_files_readable_by_others_are_refused(tmp_path: Path) -> None:
    key = tmp_path / "pseudonym.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o644)
    with pytest.raises(ValidationError, match="chmod 600"):
        Settings(_env_file=None, pseudonym_key_path=key)  # type: ignore[call-arg]
    key.chmod(0o600)
    assert Settings(_env_file=None, pseudonym_key_path=key).pseudonym_key_path == key  # type: ignore[call-arg]


def test_missing_key_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="does not exist"):
        Settings(_env_file=None, audit_signing_key_path=tmp_path / "absent.pem")  # type: ignore[call-arg]


def test_epsilon_defaults_must_agree() -> None:
    with pytest.raises(ValidationError, match="default_query_epsilon"):
        Settings(_env_file=None, default_query_epsilon=3.0, max_query_epsilon=1.0)  # type: ignore[call-arg]
