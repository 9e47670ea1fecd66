"""The API docs work on a machine without internet: every file they load is ours, no inline script runs,
and the asset route serves its allow-list and nothing else. FastAPI's default pages fail all of this."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.http.docs import DOCS_CSP
from tests.gateway.conftest import Api

PAGES = ["/docs", "/redoc"]
MEDIA_TYPES = {".js": "application/javascript", ".css": "text/css", ".png": "image/png"}


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.script_text.append(data)


def _parse(html: str) -> _Tags:
    parser = _Tags()
    parser.feed(html)
    parser.close()
    return parser


def _references(html: str) -> list[str]:
    return [value for _, attrs in _parse(html).tags for key, value in attrs.items() if key in {"src", "href"} and value]


@pytest.fixture
def state_db_url(tmp_path: Path) -> str:
    """The docs never touch the state database: SQLite alone is enough."""
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture
def client(api: Api) -> TestClient:
    return api.client


@pytest.mark.parametrize("page", PAGES)
def test_the_page_is_html_under_a_csp_that_runs_no_inline_script(client: TestClient, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert csp == DOCS_CSP
    directives = {part.split()[0]: part.split()[1:] for part in csp.split(";") if part.strip()}
    assert directives["script-src"] == ["'self'"]  # no 'unsafe-inline', no 'unsafe-eval', no other origin
    assert directives["default-src"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]


@pytest.mark.parametrize("page", PAGES)
def test_the_page_refers_only_to_paths_of_this_origin(client: TestClient, page: str) -> None:
    html = client.get(page).text
    assert not re.search(r"https?:|//", html), "a URL of another origin (or scheme-relative) in the page"
    references = _references(html)
    assert references, "the page loads nothing: the check would pass vacuously"
    assert all(reference.startswith("/docs/assets/") for reference in references), references


@pytest.mark.parametrize("page", PAGES)
def test_the_page_has_no_inline_script_nor_event_handler(client: TestClient, page: str) -> None:
    parsed = _parse(client.get(page).text)
    scripts = [attrs for tag, attrs in parsed.tags if tag == "script"]
    assert scripts
    assert all(attrs.get("src") for attrs in scripts), scripts
    assert parsed.script_text == []
    handlers = [key for _, attrs in parsed.tags for key in attrs if key.startswith("on")]
    assert handlers == []


@pytest.mark.parametrize("page", PAGES)
def test_every_asset_a_page_loads_is_served_with_its_type(client: TestClient, page: str) -> None:
    for reference in _references(client.get(page).text):
        response = client.get(reference)
        assert response.status_code == 200, reference
        assert response.headers["content-type"].split(";")[0] == MEDIA_TYPES[Path(reference).suffix], reference
        assert response.content, reference


def test_swagger_ui_starts_from_our_own_script_on_the_spec_of_this_gateway(client: TestClient) -> None:
    html = client.get("/docs").text
    assert '<div id="swagger-ui"></div>' in html
    sources = [attrs["src"] for tag, attrs in _parse(html).tags if tag == "script"]
    assert sources == ["/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-init.js"]
    assert len(client.get("/docs/assets/swagger-ui-bundle.js").content) > 500_000  # the real bundle
    init = client.get("/docs/assets/swagger-init.js").text
    assert "SwaggerUIBundle(" in init
    assert 'url: "/openapi.json"' in init
    assert 'dom_id: "#swagger-ui"' in init
    assert "SwaggerUIStandalonePreset" not in init  # not in swagger-ui-bundle.js: it would be undefined


def test_redoc_reads_the_spec_of_this_gateway(client: TestClient) -> None:
    html = client.get("/redoc").text
    assert '<redoc spec-url="/openapi.json"></redoc>' in html
    assert '<script src="/docs/assets/redoc.standalone.js"></script>' in html
    assert len(client.get("/docs/assets/redoc.standalone.js").content) > 500_000


@pytest.mark.parametrize(
    "path",
    [
        "/docs/assets/../../settings.py",
        "/docs/assets/..%2F..%2Fsettings.py",
        "/docs/assets/%2e%2e%2fapp.py",
        "/docs/assets/unknown.js",
        "/docs/assets/core.py",  # a file next to the bundles, not on the list
        "/docs/assets/",
    ],
)
def test_the_asset_route_serves_its_list_and_nothing_else(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404, path
    assert "text/html" not in response.headers["content-type"]


def test_the_openapi_document_is_still_served_and_does_not_list_the_docs(client: TestClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert "/v1/query" in paths
    assert not [path for path in paths if path.startswith(("/docs", "/redoc"))]
