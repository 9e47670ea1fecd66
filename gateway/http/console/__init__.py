"""The privacy officer's web console: server-rendered pages over the audit log, budgets and grants."""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from gateway.http.console import auth, pages
from gateway.http.console.rendering import ConsoleErrorPage


def install(app: FastAPI) -> None:
    """Mount the console: its routes, its own files (vendored, never from a CDN) and its error pages."""
    app.include_router(auth.router)
    app.include_router(pages.router)
    app.mount("/console/static", StaticFiles(directory=str(files("gateway.http.console") / "static")), name="console")
    app.state.error_page = ConsoleErrorPage()
