"""The API documentation pages, served from the gateway itself rather than from a CDN.

FastAPI's own pages load Swagger UI and ReDoc from jsDelivr, which a gateway on a closed network cannot
reach, and which would run a third party's script with our origin. The scripts come from the
``fastapi_offline`` wheel (its files only, not its code) and are started from a file of ours, so the
pages need no inline script and their CSP allows scripts from this origin only.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException

DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'"
)
"""Scripts only from this origin; Swagger UI and ReDoc set inline styles, and ReDoc runs its search in a
worker made from a blob, so those two are let through."""

_VENDORED = files("fastapi_offline") / "static"
_OURS = files("gateway.http") / "docs_assets"
_JS = "application/javascript; charset=utf-8"
_ASSETS: dict[str, tuple[Traversable, str]] = {
    "swagger-ui-bundle.js": (_VENDORED / "swagger-ui-bundle.js", _JS),
    "swagger-ui.css": (_VENDORED / "swagger-ui.css", "text/css; charset=utf-8"),
    "redoc.standalone.js": (_VENDORED / "redoc.standalone.js", _JS),
    "favicon.png": (_VENDORED / "favicon.png", "image/png"),
    "swagger-init.js": (_OURS / "swagger-init.js", _JS),
}
"""The only files served: the request picks a key, never a path."""

_SWAGGER_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Datapoort - Swagger UI</title>
<link rel="icon" type="image/png" href="/docs/assets/favicon.png">
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/swagger-init.js"></script>
</body>
</html>
"""

_REDOC_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Datapoort - ReDoc</title>
<link rel="icon" type="image/png" href="/docs/assets/favicon.png">
</head>
<body>
<redoc spec-url="/openapi.json"></redoc>
<script src="/docs/assets/redoc.standalone.js"></script>
</body>
</html>
"""

router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    return HTMLResponse(_SWAGGER_HTML, headers={"Content-Security-Policy": DOCS_CSP})


@router.get("/redoc")
async def redoc() -> HTMLResponse:
    return HTMLResponse(_REDOC_HTML, headers={"Content-Security-Policy": DOCS_CSP})


@cache
def _read(name: str) -> bytes:
    """Read once: the bundles are megabytes and do not change while the process runs."""
    return _ASSETS[name][0].read_bytes()


@router.get("/docs/assets/{name}")
def asset(name: str) -> Response:  # sync: the first read of a bundle is file I/O, kept off the event loop
    if name not in _ASSETS:
        raise HTTPException(status_code=404)
    return Response(_read(name), media_type=_ASSETS[name][1])
