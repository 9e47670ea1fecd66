"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gateway import __version__
from gateway.data.catalog import load_catalog
from gateway.data.sources import Sources
from gateway.http.errors import install_error_handlers
from gateway.http.middleware import RequestContextMiddleware
from gateway.http.routers import admin, audit, catalog, extract, health, query
from gateway.keys.audit_signing import checkpoint_policy
from gateway.keys.identity_provider import TokenAuthority
from gateway.keys.pseudonym_secrets import load_master_secrets
from gateway.settings import Settings
from gateway.state import GatewayState
from gateway.store.database import create_state_engine, session_factory
from policies.enforcer import PolicyEngine


def build_state(settings: Settings) -> GatewayState:
    master_secrets = load_master_secrets(settings)  # first: a key file others can read stops the start
    engine = create_state_engine(settings.state_database_url)
    sessions = session_factory(engine, checkpoint_policy(settings))
    return GatewayState(
        settings=settings,
        engine=engine,
        sessions=sessions,
        policy_engine=PolicyEngine(sessions, poll_seconds=settings.policy_poll_seconds),
        catalog=load_catalog(settings.catalog_path),
        tokens=TokenAuthority.from_settings(settings),
        master_secrets=master_secrets,
        sources=Sources(
            duckdb_memory_limit=settings.duckdb_memory_limit,
            duckdb_temp_directory=str(settings.data_dir / "duckdb-spill"),
            extract_memory_limit=settings.extract_duckdb_memory_limit,
            extract_threads=settings.extract_duckdb_threads,
        ),
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = build_state(settings)
        for name, dataset in state.catalog.datasets.items():
            if "aggregate" in dataset.actions:  # check each file once, before the first query
                state.sources.needs_bounding(name, dataset)
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

    app.add_middleware(RequestContextMiddleware, instance=settings.instance)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(query.router)
    app.include_router(catalog.router)
    app.include_router(admin.router)
    app.include_router(audit.router)
    app.include_router(extract.router)
    return app
