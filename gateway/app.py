"""The FastAPI application factory."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

from gateway import __version__
from gateway.audit_trail import AuditContext, new_traceparent
from gateway.catalog import load_catalog
from gateway.db import create_state_engine, session_factory
from gateway.errors import install_error_handlers
from gateway.routers import catalog, health, query
from gateway.settings import Settings
from gateway.sources import Sources
from gateway.state import GatewayState
from policies.enforcer import PolicyEngine

AUDITED_PREFIX = "/v1"


def build_state(settings: Settings) -> GatewayState:
    engine = create_state_engine(settings.state_database_url)
    sessions = session_factory(engine)
    return GatewayState(
        settings=settings,
        engine=engine,
        sessions=sessions,
        policy_engine=PolicyEngine(sessions),
        catalog=load_catalog(settings.catalog_path),
        sources=Sources(),
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = build_state(settings)
        app.state.gateway = state
        app.state.sessions = state.sessions
        try:
            yield
        finally:
            state.sources.close()
            state.engine.dispose()

    app = FastAPI(
        title="Datapoort",
        version=__version__,
        summary="Privacy-preserving data sharing gateway for Dutch municipalities",
        lifespan=lifespan,
    )

    @app.middleware("http")
    async def audit_context(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        traceparent = new_traceparent(request.headers.get("traceparent"))
        request_id = secrets.token_hex(16)
        if request.url.path.startswith(AUDITED_PREFIX):
            request.state.audit = AuditContext.start(
                request_id=request_id,
                traceparent=traceparent,
                client_address=request.client.host if request.client else None,
                instance=settings.instance,
                action=f"{request.method} {request.url.path}"[:64],
            )
        response = await call_next(request)
        response.headers["X-Request-ID"] = request_id
        response.headers["traceparent"] = traceparent
        return response

    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(query.router)
    app.include_router(catalog.router)
    return app
