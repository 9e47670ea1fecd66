"""The privacy officer's whole review in a real browser (Debian's Chromium, headless, through Playwright),
against a gateway served by uvicorn with no route to the internet: sign in (API key and the identity
provider), filter, open an event, export CSV, budgets and grants, an inzage printed, a CSRF refusal, the
cookies' flags (also behind TLS), a tampered chain flagged red, and the API docs offline. No page may
break its Content-Security-Policy; each is screenshotted into ``test-artifacts/console/``."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import pyarrow.parquet as pq
import pytest

from tests.gateway.conftest import DEMO_SQL
from tests.gateway.http.console.conftest import ARTIFACTS, Served, gateway_settings, provision, self_signed, serve
from tests.policies.test_tokens import ISSUER, Provider

CLIENT_ID = "datapoort-console"
JUSTIFICATION = "Calamiteitenonderzoek jeugdhulp: melding 2026-114, besluit van de FG van 3 december"


class IdentityProvider(BaseHTTPRequestHandler):
    """The gemeente's identity provider in miniature: it signs the officer in at once, and hands out an ID
    token only for a code whose PKCE verifier matches the challenge it was started with."""

    provider: Provider
    codes: dict[str, dict[str, str]]
    exchanges: list[dict[str, str]]

    def do_GET(self) -> None:
        asked = {name: values[0] for name, values in parse_qs(urlparse(self.path).query).items()}
        code = base64.urlsafe_b64encode(hashlib.sha256(asked["state"].encode()).digest()).decode()[:20]
        self.codes[code] = asked
        target = f"{asked['redirect_uri']}?{urlencode({'code': code, 'state': asked['state']})}"
        self.send_response(302)
        self.send_header("Location", target)
        self.end_headers()

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        form = {name: values[0] for name, values in parse_qs(self.rfile.read(length).decode()).items()}
        self.exchanges.append(form)
        asked = self.codes.pop(form.get("code", ""), None)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(form.get("code_verifier", "").encode()).digest())
        if asked is None or challenge.rstrip(b"=").decode() != asked["code_challenge"]:
            self.send_response(400)
            self.end_headers()
            return
        token = self.provider.token(
            aud=CLIENT_ID,
            sub="fg-2",
            name="Frieda Gegevensbescherming",
            organisation="gemeente-voorbeeldstad",
            roles=["FG"],
            nonce=asked["nonce"],
        )
        body = json.dumps({"id_token": token, "token_type": "Bearer"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def idp(tmp_path: Path) -> Iterator[tuple[str, type[IdentityProvider]]]:
    handler = type("Idp", (IdentityProvider,), {"provider": Provider(tmp_path), "codes": {}, "exchanges": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # On "localhost", another site than the gateway's 127.0.0.1: the way back from the provider is a
        # cross-site navigation, as with a real provider, which a SameSite=Strict cookie does not follow.
        yield f"http://localhost:{server.server_port}", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def gateway(
    tmp_path: Path, demo_dir: Path, demo_snapshots: Path, idp: tuple[str, type[IdentityProvider]]
) -> Iterator[Served]:
    idp_url, handler = idp
    settings = gateway_settings(
        tmp_path,
        demo_dir,
        demo_snapshots,
        oidc_issuer=ISSUER,
        oidc_audience="datapoort",
        oidc_jwks_file=handler.provider.path,
        oidc_role_map={"FG": "privacy_officer"},
        oidc_authorization_endpoint=f"{idp_url}/authorize",
        oidc_token_endpoint=f"{idp_url}/token",
        oidc_client_id=CLIENT_ID,
    )
    keys = provision(settings)
    # The demo's export grant asks k = 10, which the tests' small Voorbeeldstad cannot meet in any class.
    from sqlalchemy import create_engine, text

    engine = create_engine(settings.state_database_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE \"grant\" SET k_anonymity = 2 WHERE action = 'export'"))
    engine.dispose()
    for _ in serve(settings):
        yield Served(f"http://127.0.0.1:{settings.port}", keys, settings, demo_dir)


@pytest.fixture
def browser_context(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    try:
        yield context
    finally:
        context.close()


def watch(page: Any, served: Served) -> list[str]:
    """Collect what would show a broken page: CSP violations, script errors, requests leaving the host."""
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    origin = urlparse(served.url).netloc

    def leaves(request: Any) -> None:
        if urlparse(request.url).netloc not in (origin, "") and not request.url.startswith("data:"):
            problems.append(f"request to {request.url}")

    page.on("request", leaves)
    return problems


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _api(served: Served, key: str) -> httpx.Client:
    return httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {served.keys[key]}"}, timeout=30)


def some_activity(served: Served) -> str:
    """Answers, refusals, an extract and a re-identification for the officer to review; the BSN of the
    person the re-identification named."""
    with _api(served, "analyst") as analyst:
        for purpose in ("beleidsinformatie", "beleidsinformatie", "marketing"):
            analyst.post("/v1/query", json={"sql": DEMO_SQL, "purpose": purpose, "epsilon": 0.2})
    with _api(served, "partner") as partner:
        extract = partner.post(
            "/v1/extracts",
            json={
                "dataset": "jeugdzorg",
                "purpose": "jeugdhulp-evaluatie",
                "columns": ["person_id", "wijk", "start_date", "zorgvorm"],
                "format": "csv",
            },
        )
        assert extract.status_code == 200, extract.text
    pseudonym = next(csv.DictReader(io.StringIO(extract.text)))["person_id_pseudonym"]
    with _api(served, "privacy_officer") as officer:
        found = officer.post(
            "/v1/reidentify",
            json={
                "pseudonym": pseudonym,
                "dataset": "jeugdzorg",
                "purpose": "herleiding",
                "justification": JUSTIFICATION,
            },
        )
        assert found.status_code == 200, found.text
    residents = pq.read_table(served.demo_dir / "residents.parquet", columns=["person_id", "bsn"]).to_pydict()
    return str(residents["bsn"][[str(p) for p in residents["person_id"]].index(found.json()["identifier"])])


def sign_in_with_key(page: Any, served: Served, key: str = "privacy_officer") -> None:
    page.goto(f"{served.url}/console")
    assert page.url.startswith(f"{served.url}/console/login")
    page.fill("#api_key", served.keys[key])
    page.click("#login-form button[type=submit]")
    page.wait_for_url(f"{served.url}/console")


def test_the_officer_reviews_the_log_in_the_browser(gateway: Served, browser_context: Any) -> None:
    some_activity(gateway)
    page = browser_context.new_page()
    problems = watch(page, gateway)
    page.goto(f"{gateway.url}/console/login")
    shot(page, "01-sign-in")
    sign_in_with_key(page, gateway)
    assert "Auditketen intact" in page.inner_text("#chain-state")
    assert int(page.inner_text("#requests-today")) >= 5
    assert int(page.inner_text("#refused-today")) >= 1
    shot(page, "02-dashboard")

    cookies = {cookie["name"]: cookie for cookie in browser_context.cookies()}
    session = cookies["datapoort-console"]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    assert gateway.keys["privacy_officer"] not in json.dumps(list(cookies.values()))

    page.click("nav >> text=Gebeurtenissen")
    page.select_option("select[name=decision]", "deny")
    page.fill("input[name=principal_id]", "analist-sociaal-domein")
    page.click("#filters button[type=submit]")
    page.wait_for_load_state()
    assert "decision=deny" in page.url
    badges = page.locator("#events tbody .badge").all_inner_texts()
    assert badges
    assert set(badges) == {"deny"}
    shot(page, "03-events-filtered")

    page.locator("#events tbody a").first.click()
    page.wait_for_url("**/console/events/*")
    fields = page.inner_text("#event-fields")
    assert "policy_denied" in fields or "purpose" in fields
    assert len(page.locator("#chain-position code.hash").all_inner_texts()[1]) == 64
    assert page.locator("#trace tbody tr.current").count() == 1
    shot(page, "04-event")

    page.go_back()
    with page.expect_download() as download_info:
        page.click("#export-csv")
    exported = Path(download_info.value.path()).read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert rows
    assert {row["decision"] for row in rows} == {"deny"}
    assert {row["principal_id"] for row in rows} == {"analist-sociaal-domein"}

    page.click("nav >> text=Privacybudget")
    assert page.locator("section.budget svg.step-chart").count() >= 2
    assert page.locator("#budget-use tbody tr").count() >= 1
    shot(page, "05-budget")

    page.click("nav >> text=Rechten")
    assert page.locator("#grants tbody tr").count() >= 4
    assert JUSTIFICATION in page.inner_text("#reidentifications")
    assert "policy_denied" in page.inner_text("#refusals")
    shot(page, "06-grants")

    page.click(".signout button")
    page.wait_for_url("**/console/login")
    page.goto(f"{gateway.url}/console")
    assert "/console/login" in page.url  # the session is gone on the server, not only in the browser
    assert problems == [], problems


def test_an_inzage_is_printable_for_the_data_subject(gateway: Served, browser_context: Any) -> None:
    bsn = some_activity(gateway)
    page = browser_context.new_page()
    problems = watch(page, gateway)
    sign_in_with_key(page, gateway)
    page.click("nav >> text=Inzage")
    shot(page, "07-inzage-form")
    page.fill("#bsn", bsn)
    page.click("#inzage-form button[type=submit]")
    page.wait_for_selector("#inzage-result")
    assert page.inner_text("#extract-count") == "1"
    assert "jeugdzorg" in page.inner_text("#extracts")
    assert bsn not in page.content()  # the page shows the last four digits only
    shot(page, "08-inzage-result")
    page.emulate_media(media="print")
    assert page.locator("header.top").is_hidden()
    assert page.locator("#inzage-form").is_hidden()
    shot(page, "09-inzage-print")
    page.emulate_media(media="screen")
    with _api(gateway, "privacy_officer") as officer:  # and the BSN went into no audit record
        export = officer.get("/v1/audit/events/export", params={"format": "jsonl"})
    assert export.status_code == 200
    assert bsn not in export.text
    assert problems == [], problems


def test_a_form_with_another_sessions_token_is_refused(gateway: Served, browser_context: Any) -> None:
    page = browser_context.new_page()
    problems = watch(page, gateway)
    sign_in_with_key(page, gateway)
    page.click("nav >> text=Inzage")
    page.eval_on_selector("#inzage-form input[name=csrf_token]", "element => { element.value = 'forged' }")
    page.fill("#bsn", "123456782")
    page.click("#inzage-form button[type=submit]")
    page.wait_for_selector("#error-code")
    assert page.inner_text("#error-code") == "csrf_failed"
    shot(page, "10-csrf-refused")
    # The refusal page is an error the browser logs as a failed load (403): nothing else may be there.
    assert [problem for problem in problems if "403" not in problem] == [], problems


def test_a_tampered_chain_is_flagged_red(gateway: Served, browser_context: Any) -> None:
    some_activity(gateway)
    page = browser_context.new_page()
    problems = watch(page, gateway)
    sign_in_with_key(page, gateway)
    from sqlalchemy import create_engine, text

    engine = create_engine(gateway.settings.state_database_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE audit_event SET purpose = 'vervalst' WHERE sequence = 3"))
    engine.dispose()
    page.click("#verify-now")
    page.wait_for_url(f"{gateway.url}/console")
    panel = page.locator("#chain-state")
    assert "GEBROKEN" in panel.inner_text()
    assert page.inner_text("#first-broken") == "3"
    colour = panel.evaluate("element => getComputedStyle(element).color")
    assert colour == "rgb(179, 38, 30)"  # the console's red
    shot(page, "11-chain-broken")
    assert problems == [], problems


def test_the_officer_signs_in_with_the_identity_provider(
    gateway: Served, browser_context: Any, idp: tuple[str, type[IdentityProvider]]
) -> None:
    _, handler = idp
    page = browser_context.new_page()
    problems = watch(page, gateway)
    page.goto(f"{gateway.url}/console/login")
    # The provider is on another port of this host: its requests are expected.
    page.click("#oidc-sign-in")
    page.wait_for_url(f"{gateway.url}/console")
    assert "oidc:fg-2" in page.inner_text(".who")
    assert "Auditketen intact" in page.inner_text("#chain-state")
    assert len(handler.exchanges) == 1
    assert "code_verifier" in handler.exchanges[0]
    shot(page, "12-signed-in-with-identity-provider")
    assert [p for p in problems if not p.startswith("request to http://localhost")] == [], problems


def test_behind_tls_the_session_cookie_is_secure_and_host_only(
    tmp_path: Path, demo_dir: Path, demo_snapshots: Path, chromium: Any
) -> None:
    settings = gateway_settings(tmp_path, demo_dir, demo_snapshots, scheme="https")
    keys = provision(settings)
    for _ in serve(settings, ssl_files=self_signed(tmp_path)):
        served = Served(f"https://127.0.0.1:{settings.port}", keys, settings, demo_dir)
        context = chromium.new_context(ignore_https_errors=True)
        try:
            page = context.new_page()
            sign_in_with_key(page, served)
            cookies = {cookie["name"]: cookie for cookie in context.cookies()}
            session = cookies["__Host-datapoort-console"]
            assert session["secure"] is True
            assert session["httpOnly"] is True
            assert session["sameSite"] == "Strict"
            assert session["path"] == "/"
        finally:
            context.close()


def test_the_api_docs_work_without_internet(gateway: Served, browser_context: Any) -> None:
    page = browser_context.new_page()
    problems = watch(page, gateway)
    page.goto(f"{gateway.url}/docs")
    page.wait_for_selector(".swagger-ui .info .title")
    assert "Datapoort" in page.inner_text(".swagger-ui .info .title")
    shot(page, "13-docs")
    page.goto(f"{gateway.url}/redoc")
    page.wait_for_selector("redoc h1, [role=main] h1, .api-info h1", timeout=30_000)
    shot(page, "14-redoc")
    # ReDoc's own logo URL (cdn.redoc.ly) is refused by the CSP before any request leaves: that one line.
    remaining = [p for p in problems if "cdn.redoc.ly" not in p]
    assert remaining == [], remaining
