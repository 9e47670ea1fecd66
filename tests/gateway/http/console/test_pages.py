"""The console over HTTP (the browser tests drive the same pages in Chromium): sign-in, sessions, CSRF,
the pages' audit events, and that the console can do nothing the officer's grants do not allow."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from audit.models import AuditEvent
from gateway.http.console.security import CONSOLE_CSP
from policies.models import ApiKey, ConsoleSession
from tests.gateway.conftest import DEMO_SQL, Api

COOKIE = "datapoort-console"


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html[:500]
    return match.group(1)


def sign_in(client: TestClient, key: str) -> str:
    """Sign in as the browser would; the session cookie stays in the client's jar."""
    form = client.get("/console/login")
    assert form.status_code == 200
    response = client.post(
        "/console/login", data={"api_key": key, "csrf_token": _csrf(form.text)}, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/console"
    return _csrf(client.get("/console").text)


def test_signing_in_with_the_officers_key_opens_a_session_with_strict_cookies(api: Api) -> None:
    form = api.client.get("/console/login")
    sign_in_cookie = form.headers["set-cookie"]
    assert "HttpOnly" in sign_in_cookie
    assert "SameSite=lax" in sign_in_cookie
    response = api.client.post(
        "/console/login",
        data={"api_key": api.keys["privacy_officer"], "csrf_token": _csrf(form.text)},
        follow_redirects=False,
    )
    cookies = response.headers.get_list("set-cookie")
    session_cookie = next(cookie for cookie in cookies if cookie.startswith(f"{COOKIE}="))
    assert "HttpOnly" in session_cookie
    assert "SameSite=strict" in session_cookie
    assert "Path=/" in session_cookie
    assert "Secure" not in session_cookie  # plain HTTP here; behind TLS see the next test
    assert api.keys["privacy_officer"] not in session_cookie
    dashboard = api.client.get("/console")
    assert dashboard.status_code == 200
    assert "Auditketen intact" in dashboard.text
    assert dashboard.headers["content-security-policy"] == CONSOLE_CSP
    assert "'unsafe-inline'" not in CONSOLE_CSP
    assert "frame-ancestors 'none'" in CONSOLE_CSP
    assert dashboard.headers["x-frame-options"] == "DENY"
    assert "<script>" not in dashboard.text
    assert " style=" not in dashboard.text
    assert "onclick" not in dashboard.text
    with api.client.app.state.gateway.sessions() as session:  # type: ignore[attr-defined]
        stored = session.scalars(select(ConsoleSession)).one()
    value = api.client.cookies[COOKIE]
    assert stored.id == value.split(".")[0]
    assert stored.secret_sha256 not in value


def test_behind_tls_the_cookies_are_secure_and_host_prefixed(api: Api) -> None:
    client = TestClient(api.client.app, base_url="https://testserver")
    form = client.get("/console/login")
    assert form.headers["set-cookie"].startswith("__Host-datapoort-sign-in=")
    assert "Secure" in form.headers["set-cookie"]
    response = client.post(
        "/console/login",
        data={"api_key": api.keys["privacy_officer"], "csrf_token": _csrf(form.text)},
        follow_redirects=False,
    )
    session_cookie = next(
        c for c in response.headers.get_list("set-cookie") if c.startswith("__Host-datapoort-console=")
    )
    assert "Secure" in session_cookie
    assert "HttpOnly" in session_cookie
    assert "SameSite=strict" in session_cookie
    assert client.get("/console").status_code == 200


def test_a_sign_in_without_the_forms_token_is_refused_and_audited(api: Api) -> None:
    api.client.get("/console/login")
    response = api.client.post("/console/login", data={"api_key": api.keys["privacy_officer"], "csrf_token": "x"})
    assert response.status_code == 403
    assert "csrf_failed" in response.text
    assert COOKIE not in api.client.cookies
    event = api.events()[-1]
    assert (event.action, event.decision, event.reason) == ("console:sign-in", "deny", "csrf_failed")


def test_a_wrong_key_is_refused_and_an_analyst_may_not_open_the_console(api: Api) -> None:
    form = api.client.get("/console/login")
    wrong = api.client.post("/console/login", data={"api_key": "dpk_nonsense", "csrf_token": _csrf(form.text)})
    assert wrong.status_code == 401
    assert "authentication_failed" in wrong.text  # said, not sent back as if a session had ended
    assert COOKIE not in api.client.cookies
    form = api.client.get("/console/login")
    analyst = api.client.post("/console/login", data={"api_key": api.keys["analyst"], "csrf_token": _csrf(form.text)})
    assert analyst.status_code == 403
    assert "policy_denied" in analyst.text
    assert COOKIE not in api.client.cookies
    refusals = [(e.action, e.decision, e.reason) for e in api.events()[-2:]]
    assert refusals == [
        ("console:sign-in", "deny", "authentication_failed"),
        ("console:sign-in", "deny", "policy_denied"),
    ]


def test_without_a_session_every_page_goes_to_the_sign_in(api: Api) -> None:
    for path in ("/console", "/console/events", "/console/events/1", "/console/budget", "/console/grants"):
        response = api.client.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/console/login")
    api.client.cookies.set(COOKIE, "0" * 32 + ".forged")
    assert api.client.get("/console", follow_redirects=False).status_code == 303


def test_every_page_is_audited_like_the_api_reading(api: Api) -> None:
    sign_in(api.client, api.keys["privacy_officer"])
    before = len(api.events())
    for path in (
        "/console",
        "/console/events?decision=allow",
        "/console/events/1",
        "/console/budget",
        "/console/grants",
    ):
        response = api.client.get(path)
        assert response.status_code == 200, (path, response.text[:300])
    events = api.events()[before:]
    assert [e.action for e in events] == ["audit:verify", "audit:read", "audit:read", "audit:read", "admin:read"]
    assert all(e.principal_id == "fg-voorbeeldstad" and e.decision == "allow" for e in events)
    assert all(e.purpose == "toezicht" and e.response_digest for e in events)
    assert 'events {"decision": "allow"}' in (events[1].query or "")


def test_the_events_page_filters_pages_and_opens_an_event_with_its_trace(api: Api) -> None:
    api.query(api.keys["analyst"], {"sql": DEMO_SQL, "purpose": "beleidsinformatie"})
    api.query(api.keys["analyst"], {"sql": DEMO_SQL, "purpose": "marketing"})
    sign_in(api.client, api.keys["privacy_officer"])
    page = api.client.get("/console/events?decision=deny&principal_id=analist-sociaal-domein")
    rows = re.findall(r'<tr class="decision-(\w+)">', page.text)
    assert rows
    assert set(rows) == {"deny"}
    denied = next(e for e in api.events() if e.decision == "deny" and e.principal_id == "analist-sociaal-domein")
    detail = api.client.get(f"/console/events/{denied.sequence}")
    assert detail.status_code == 200
    assert denied.hash in detail.text
    assert denied.prev_hash in detail.text
    assert denied.traceparent is not None
    assert denied.traceparent.split("-")[1] in detail.text
    assert api.client.get("/console/events/999999").status_code == 404
    bad = api.client.get("/console/events?since=yesterday")
    assert bad.status_code == 400
    assert "invalid_query" in bad.text


def test_paging_follows_the_cursor(api: Api) -> None:
    for _ in range(3):
        api.query(api.keys["analyst"], {"sql": DEMO_SQL, "purpose": "beleidsinformatie"})
    sign_in(api.client, api.keys["privacy_officer"])
    from gateway.http.console import pages

    original = pages.PAGE_SIZE
    pages.PAGE_SIZE = 2
    try:
        first = api.client.get("/console/events")
        cursor = re.search(r'id="next-page" href="[^"]*after=(\d+)"', first.text)
        assert cursor
        second = api.client.get(f"/console/events?after={cursor.group(1)}")
        first_rows = re.findall(r'href="/console/events/(\d+)"', first.text)
        second_rows = re.findall(r'href="/console/events/(\d+)"', second.text)
        assert max(map(int, first_rows)) < min(map(int, second_rows))
    finally:
        pages.PAGE_SIZE = original


def test_export_of_the_selection_as_csv_is_audited(api: Api) -> None:
    api.query(api.keys["analyst"], {"sql": DEMO_SQL, "purpose": "marketing"})
    sign_in(api.client, api.keys["privacy_officer"])
    response = api.client.get("/console/events/export?decision=deny&format=csv")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    lines = response.text.strip().splitlines()
    assert lines[0].startswith("sequence,")
    assert len(lines) >= 2
    assert all(",deny," in line for line in lines[1:])
    event = api.events()[-1]
    assert event.action == "audit:export"
    assert '"decision": "deny"' in (event.query or "")


def test_forms_of_the_session_need_its_csrf_token(api: Api) -> None:
    token = sign_in(api.client, api.keys["privacy_officer"])
    assert api.client.post("/console/inzage", data={"bsn": "123456782"}).status_code == 403
    wrong = api.client.post("/console/inzage", data={"bsn": "123456782", "csrf_token": token[:-2] + "AA"})
    assert wrong.status_code == 403
    assert "csrf_failed" in wrong.text
    other = TestClient(api.client.app)
    other_token = sign_in(other, api.keys["privacy_officer"])
    assert other_token != token
    assert api.client.post("/console/inzage", data={"bsn": "123456782", "csrf_token": other_token}).status_code == 403
    assert api.client.post("/console/logout", data={"csrf_token": other_token}).status_code == 403
    assert api.client.get("/console").status_code == 200  # still signed in


def test_inzage_shows_the_extracts_without_the_bsn_in_the_log(api: Api) -> None:
    token = sign_in(api.client, api.keys["privacy_officer"])
    response = api.client.post("/console/inzage", data={"bsn": "123456782", "csrf_token": token})
    assert response.status_code == 200, response.text[:400]
    assert 'id="inzage-result"' in response.text
    event = api.events()[-1]
    assert event.action == "audit:read"
    assert "123456782" not in (event.query or "") + (event.detail or "")
    invalid = api.client.post("/console/inzage", data={"bsn": "12ab", "csrf_token": token})
    assert invalid.status_code == 422


def test_sign_out_and_key_revocation_end_the_session_at_once(api: Api) -> None:
    token = sign_in(api.client, api.keys["privacy_officer"])
    response = api.client.post("/console/logout", data={"csrf_token": token}, follow_redirects=False)
    assert response.status_code == 303
    assert api.client.get("/console", follow_redirects=False).status_code == 303
    sign_in(api.client, api.keys["privacy_officer"])
    with api.client.app.state.gateway.sessions() as session:  # type: ignore[attr-defined]
        session.execute(update(ApiKey).values(revoked_at=datetime.now(UTC)))
        session.commit()
    assert api.client.get("/console", follow_redirects=False).status_code == 303


@pytest.mark.parametrize("column", ["last_seen_at", "expires_at"])
def test_an_idle_or_expired_session_has_ended(api: Api, column: str) -> None:
    sign_in(api.client, api.keys["privacy_officer"])
    with api.client.app.state.gateway.sessions() as session:  # type: ignore[attr-defined]
        moment = datetime.now(UTC) - timedelta(minutes=api.settings.console_session_minutes + 1)
        if column == "expires_at":
            moment = datetime.now(UTC) - timedelta(seconds=1)
        session.execute(update(ConsoleSession).values({column: moment}))
        session.commit()
    assert api.client.get("/console", follow_redirects=False).status_code == 303


def test_the_console_can_do_nothing_the_officers_grants_do_not_allow(api: Api) -> None:
    sign_in(api.client, api.keys["privacy_officer"])
    with api.client.app.state.gateway.sessions() as session:  # type: ignore[attr-defined]
        from policies.models import Grant

        session.execute(update(Grant).where(Grant.action == "audit:read").values(revoked_at=datetime.now(UTC)))
        session.commit()
    api.client.app.state.gateway.policy_engine.mark_stale()  # type: ignore[attr-defined]
    for path in ("/console", "/console/events", "/console/budget", "/console/grants"):
        response = api.client.get(path)
        assert response.status_code == 403, path
        assert "policy_denied" in response.text
    assert all(e.decision == "deny" for e in api.events()[-4:])


def test_audited_page_is_not_sent_when_its_event_cannot_be_written(api: Api) -> None:
    sign_in(api.client, api.keys["privacy_officer"])
    api.refuse_audit_inserts()
    response = api.client.get("/console/events")
    assert response.status_code == 503
    assert "audit_unavailable" in response.text
    assert "<table" not in response.text


def test_a_broken_chain_is_shown_red_with_its_first_broken_sequence(api: Api) -> None:
    api.query(api.keys["analyst"], {"sql": DEMO_SQL, "purpose": "beleidsinformatie"})
    sign_in(api.client, api.keys["privacy_officer"])
    target = api.events()[1].sequence
    api.execute(f"UPDATE audit_event SET purpose = 'vervalst' WHERE sequence = {target}")
    # The overview shows the verification of the last minute; 'verify now' verifies at once.
    assert "Auditketen intact" in api.client.get("/console").text
    token = _csrf(api.client.get("/console").text)
    verified = api.client.post("/console/verify", data={"csrf_token": token}, follow_redirects=False)
    assert verified.status_code == 303
    assert "chain broken at" in (api.events()[-1].detail or "")
    response = api.client.get("/console")
    assert response.status_code == 200
    assert "Auditketen GEBROKEN" in response.text
    assert f'<strong id="first-broken">{target}</strong>' in response.text
    events = list(api.events())
    assert events[-1].action == "audit:verify"
    assert events[-1].sequence > target  # the page's own event is appended to the same (broken) log
    assert isinstance(events[-1], AuditEvent)


def test_the_operator_ends_an_officers_sessions_from_the_host(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from gateway.cli import app

    sign_in(api.client, api.keys["privacy_officer"])
    monkeypatch.setenv("DATAPOORT_DATABASE_URL", api.settings.state_database_url)
    runner = CliRunner()
    listed = runner.invoke(app, ["console", "sessions", "--data-dir", str(api.settings.data_dir)])
    assert listed.exit_code == 0, listed.output
    assert "fg-voorbeeldstad" in listed.output
    assert "via api_key" in listed.output
    ended = runner.invoke(
        app, ["console", "revoke", "--principal", "fg-voorbeeldstad", "--data-dir", str(api.settings.data_dir)]
    )
    assert ended.exit_code == 0, ended.output
    assert "1 console session(s) ended" in ended.output
    assert api.client.get("/console", follow_redirects=False).status_code == 303
    revoked = [e for e in api.events() if e.query == "console sessions revoked: fg-voorbeeldstad"]
    assert [e.principal_id.startswith("system:cli:") for e in revoked] == [True]
    assert runner.invoke(app, ["console", "revoke", "--data-dir", str(api.settings.data_dir)]).exit_code == 2


def test_odd_filters_are_refused_as_bad_input_never_a_failure(api: Api) -> None:
    sign_in(api.client, api.keys["privacy_officer"])
    for query in ("until=9999-12-31", "since=0001-01-01&until=9999-01-01", "decision=maybe", "after=-1"):
        response = api.client.get(f"/console/events?{query}")
        assert 400 <= response.status_code < 500, (query, response.status_code)
    assert api.client.get("/console/events/export?format=xml").status_code == 422
    assert api.client.get("/console/events?since=0001-01-01").status_code == 200


def test_signing_in_again_ends_the_session_the_browser_held(api: Api) -> None:
    sign_in(api.client, api.keys["privacy_officer"])
    first = api.client.cookies[COOKIE]
    sign_in(api.client, api.keys["privacy_officer"])
    assert api.client.cookies[COOKIE] != first
    stale = TestClient(api.client.app)
    stale.cookies.set(COOKIE, first)
    assert stale.get("/console", follow_redirects=False).status_code == 303


def test_a_refusal_page_of_a_signed_in_officer_still_offers_sign_out(api: Api) -> None:
    sign_in(api.client, api.keys["privacy_officer"])
    missing = api.client.get("/console/events/999999")
    assert missing.status_code == 404
    assert 'action="/console/logout"' in missing.text
    token = _csrf(missing.text)
    assert api.client.post("/console/logout", data={"csrf_token": token}, follow_redirects=False).status_code == 303


def test_an_identity_provider_callback_that_was_not_started_here_is_refused(api: Api) -> None:
    from gateway.http.app import create_app
    from tests.policies.test_tokens import AUDIENCE, ISSUER, Provider

    provider = Provider(api.settings.data_dir)
    settings = api.settings.model_copy(
        update={
            "oidc_issuer": ISSUER,
            "oidc_audience": AUDIENCE,
            "oidc_jwks_file": provider.path,
            "oidc_authorization_endpoint": "http://127.0.0.1:9/authorize",
            "oidc_token_endpoint": "http://127.0.0.1:9/token",
            "oidc_client_id": "console",
            "public_url": "http://testserver",
        }
    )
    with TestClient(create_app(settings)) as client:
        start = client.get("/console/oidc/start", follow_redirects=False)
        assert start.status_code == 303
        location = start.headers["location"]
        assert location.startswith("http://127.0.0.1:9/authorize?")
        assert "code_challenge_method=S256" in location
        assert "redirect_uri=http%3A%2F%2Ftestserver%2F" in location
        forged = client.get("/console/oidc/callback?code=x&state=forged")
        assert forged.status_code == 403
        assert "csrf_failed" in forged.text
        state = location.split("state=")[1].split("&")[0]
        unreachable = client.get(f"/console/oidc/callback?code=x&state={state}")  # the token endpoint is down
        assert unreachable.status_code == 401
        assert "authentication_failed" in unreachable.text
        refused = client.get(f"/console/oidc/callback?error=access_denied&state={state}")
        assert refused.status_code == 401
        assert "access_denied" in refused.text
