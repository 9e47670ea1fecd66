"""docker-compose.yml and the Dockerfile agree with the settings (no Docker engine runs here to try them)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import make_url

from gateway.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def _compose() -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(document, dict)
    return document


def _resolve(value: str) -> str:
    """Substitute compose's ${VAR:?message} with a placeholder, as compose would with VAR set."""
    return re.sub(r"\$\{[A-Z_]+:\?[^}]*\}", "secret-from-env", value)


def test_services_and_healthchecks() -> None:
    services = _compose()["services"]
    assert set(services) == {"gateway", "postgres"}
    for service in services.values():
        assert service["healthcheck"]["test"]
    assert services["gateway"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_gateway_state_db_points_at_the_postgres_service() -> None:
    services = _compose()["services"]
    gateway_env = services["gateway"]["environment"]
    postgres_env = services["postgres"]["environment"]
    url = make_url(_resolve(gateway_env["DATAPOORT_DATABASE_URL"]))
    assert url.drivername == "postgresql+psycopg"
    assert (url.host, url.port) == ("postgres", 5432)
    assert url.database == postgres_env["POSTGRES_DB"]
    assert url.username == postgres_env["POSTGRES_USER"]
    assert url.password == "secret-from-env"  # never a literal password in the file
    assert "${DATAPOORT_POSTGRES_PASSWORD:?" in postgres_env["POSTGRES_PASSWORD"]


def test_ports_agree_with_the_settings() -> None:
    gateway = _compose()["services"]["gateway"]
    settings = Settings(_env_file=None, **{"port": int(gateway["environment"]["DATAPOORT_PORT"])})  # type: ignore[call-arg,arg-type]
    host_interface, host_port, container_port = gateway["ports"][0].split(":")
    assert host_interface == "127.0.0.1"
    assert int(container_port) == settings.port == Settings(_env_file=None).port  # type: ignore[call-arg]
    assert int(host_port) == settings.port
    command = gateway["command"]
    assert command[command.index("--port") + 1] == str(settings.port)
    assert command[command.index("--host") + 1] == "0.0.0.0"  # noqa: S104 - inside the container only


def test_the_environment_uses_only_known_settings() -> None:
    names = {f"DATAPOORT_{name.upper()}" for name in Settings.model_fields}
    for variable in _compose()["services"]["gateway"]["environment"]:
        assert variable in names, variable


def test_the_dockerfile_installs_from_the_lock_and_serves() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "uv sync --frozen --no-dev" in dockerfile
    assert 'CMD ["datapoort", "serve"]' in dockerfile
    assert "USER datapoort" in dockerfile
    assert f"EXPOSE {Settings(_env_file=None).port}" in dockerfile  # type: ignore[call-arg]
