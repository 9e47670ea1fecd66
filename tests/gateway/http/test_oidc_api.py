"""Department users with OIDC bearer tokens through the API: the JWKS comes from a URL (cached), claims
map to organisation and roles, and those roles are decided by the same casbin rules as a key holder's."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.http.app import create_app
from gateway.settings import Settings
from tests.gateway.conftest import DEMO_SQL, provision_state
from tests.policies.test_tokens import AUDIENCE, ISSUER, Provider

QUERY = {"purpose": "beleidsinformatie", "sql": DEMO_SQL, "epsilon": 0.01}


class _Jwks(BaseHTTPRequestHandler):
    body = b"{}"
    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def oidc(state_db_url: str, demo_dir: Path, tmp_path: Path) -> Iterator[tuple[TestClient, Provider, dict[str, str]]]:
    provider = Provider(tmp_path)
    handler = type("Jwks", (_Jwks,), {"body": json.dumps(provider.jwks).encode(), "hits": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    keys = provision_state(state_db_url, tmp_path, "test")
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path,
        database_url=state_db_url,
        catalog=demo_dir / "catalog.yaml",
        oidc_issuer=ISSUER,
        oidc_audience=AUDIENCE,
        oidc_jwks_url=f"http://127.0.0.1:{server.server_port}/jwks.json",
        oidc_role_map={"SD-Analisten": "analist"},
    )
    try:
        with TestClient(create_app(settings)) as client:
            client.handler = handler  # type: ignore[attr-defined]
            yield client, provider, keys
    finally:
        server.shutdown()
        server.server_close()


def _events(client: TestClient) -> list[Any]:
    from sqlalchemy import select

    from audit.models import AuditEvent

    with client.app.state.gateway.sessions() as session:  # type: ignore[attr-defined]
        return list(session.scalars(select(AuditEvent).order_by(AuditEvent.sequence)))


def _ask(client: TestClient, token: str) -> Any:
    return client.post("/v1/query", json=QUERY, headers={"Authorization": f"Bearer {token}"})


def test_a_department_user_queries_with_a_token_decided_by_its_mapped_role(
    oidc: tuple[TestClient, Provider, dict[str, str]],
) -> None:
    client, provider, _ = oidc
    response = _ask(client, provider.token())
    assert response.status_code == 200, response.text
    events = _events(client)
    synced = [e for e in events if e.principal_id == "system:oidc"]
    assert [json.loads(e.detail or "{}")["what"] for e in synced] == ["principal.create"]
    assert (events[-1].principal_id, events[-1].roles, events[-1].decision) == ("oidc:u-1234", "analist", "allow")
    for _ in range(3):  # the JWKS is cached and an unchanged identity is not synced again
        assert _ask(client, provider.token(kid="ec-1")).status_code == 200
    assert client.handler.hits == 1  # type: ignore[attr-defined]
    assert len([e for e in _events(client) if e.principal_id == "system:oidc"]) == 1
    # The identity provider drops the role: the next token's user is refused, and the change is audited.
    refused = _ask(client, provider.token(roles=["Iedereen"]))
    assert refused.status_code == 403
    last_sync = [e for e in _events(client) if e.principal_id == "system:oidc"][-1]
    detail = json.loads(last_sync.detail or "{}")
    assert (detail["what"], detail["before"]["roles"], detail["after"]["roles"]) == (
        "principal.sync_roles",
        ["analist"],
        [],
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {"aud": "another-service"},
        {"exp": int(time.time()) - 3600},
        {"iss": "https://evil.example"},
        {"organisation": "unregistered-department"},
    ],
)
def test_bad_tokens_get_401(oidc: tuple[TestClient, Provider, dict[str, str]], overrides: dict[str, Any]) -> None:
    client, provider, _ = oidc
    response = _ask(client, provider.token(**overrides))
    assert response.status_code == 401
    assert response.json()["error"] == "authentication_failed"
    assert _events(client)[-1].decision == "deny"


def test_a_tampered_token_gets_401_and_api_keys_still_work(oidc: tuple[TestClient, Provider, dict[str, str]]) -> None:
    client, provider, keys = oidc
    from tests.policies.test_tokens import _tampered

    assert _ask(client, _tampered(provider.token())).status_code == 401
    assert _ask(client, keys["analyst"]).status_code == 200


def test_a_user_disabled_by_the_administrator_is_refused_whatever_the_token_says(
    oidc: tuple[TestClient, Provider, dict[str, str]],
) -> None:
    client, provider, keys = oidc
    assert _ask(client, provider.token()).status_code == 200
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    assert client.post("/v1/admin/principals/oidc:u-1234/disable", headers=admin).status_code == 200
    assert _ask(client, provider.token()).status_code == 401


def test_a_token_cannot_move_a_user_to_another_organisation(oidc: tuple[TestClient, Provider, dict[str, str]]) -> None:
    client, provider, keys = oidc
    assert _ask(client, provider.token()).status_code == 200
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    created = client.post("/v1/admin/organisations", json={"id": "veiligheid", "display_name": "VH"}, headers=admin)
    assert created.status_code == 201
    moved = _ask(client, provider.token(organisation="veiligheid"))
    assert moved.status_code == 401
    assert "administrator must move" in moved.json()["detail"]


def test_an_older_token_does_not_bring_back_a_role_the_provider_removed(
    oidc: tuple[TestClient, Provider, dict[str, str]],
) -> None:
    client, provider, _ = oidc
    old = provider.token(iat=int(time.time()) - 60)
    assert _ask(client, old).status_code == 200
    assert _ask(client, provider.token(roles=["Iedereen"])).status_code == 403
    assert _ask(client, old).status_code == 403  # replayed, still valid, but older
