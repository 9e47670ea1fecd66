"""The FastAPI application factory."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI

from gateway import __version__
from gateway.data.catalog import load_catalog
from gateway.data.ingestion import ingest_catalog
from gateway.data.snapshots import SnapshotStore
from gateway.data.sources import Sources
from gateway.exceptions import GatewayError
from gateway.http import console, docs
from gateway.http.admission import AdmissionControl, OverloadLedger
from gateway.http.body_limit import BodyLimit
from gateway.http.errors import install_error_handlers
from gateway.http.metrics import Metrics, RequestMetrics, serving, set_catalog
from gateway.http.metrics import router as metrics_router
from gateway.http.middleware import RequestContextMiddleware
from gateway.http.rate_limit import RateLimiter
from gateway.http.routers import admin, audit, catalog, catalog_admin, compare, extract, health, peers, query
from gateway.keys.audit_signing import checkpoint_policy
from gateway.keys.identity_provider import TokenAuthority
from gateway.keys.pseudonym_secrets import load_master_secrets
from gateway.keys.snapshot_seed import load_or_create_seed
from gateway.settings import Settings
from gateway.state import GatewayState
from gateway.store.database import create_state_engine, make_private, session_factory
from policies import budget as budget_service
from policies.enforcer import PolicyEngine

logger = logging.getLogger("datapoort.app")


def build_state(settings: Settings) -> GatewayState:
    master_secrets = load_master_secrets(settings)  # first: a key file others can read stops the start
    for private in (settings.data_dir, settings.data_dir / "duckdb-spill"):  # state, snapshots, spilled rows
        private.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(private, 0o700)
    engine = create_state_engine(
        settings.state_database_url,
        threads=settings.worker_threads,
        write_wait_seconds=settings.state_write_wait_seconds,
    )
    sessions = session_factory(engine, checkpoint_policy(settings))
    file_catalog = load_catalog(settings.catalog_path)
    state = GatewayState(
        settings=settings,
        engine=engine,
        sessions=sessions,
        policy_engine=PolicyEngine(sessions, poll_seconds=settings.policy_poll_seconds),
        catalog=file_catalog,
        file_catalog=file_catalog,
        tokens=TokenAuthority.from_settings(settings),
        master_secrets=master_secrets,
        sources=Sources(
            duckdb_memory_limit=settings.duckdb_memory_limit,
            duckdb_temp_directory=str(settings.data_dir / "duckdb-spill"),
            extract_memory_limit=settings.extract_duckdb_memory_limit,
            extract_threads=settings.extract_duckdb_threads,
            snapshots=snapshot_store(settings),
            statement_seconds=settings.statement_seconds,
        ),
    )
    state.note_secrets_file()
    return state


def snapshot_store(settings: Settings) -> SnapshotStore:
    return SnapshotStore(
        settings.snapshot_dir,
        load_or_create_seed(settings.snapshot_seed_file),
        memory_limit=settings.duckdb_memory_limit,
        temp_directory=str(settings.data_dir / "duckdb-spill"),
    )


def _warn_readable_sources(state: GatewayState) -> None:
    """Source files are the operator's; a file others can read is said loudly (not refused: the gateway
    cannot know who else is meant to read it), and documented in README."""
    for name, dataset in state.catalog.datasets.items():
        path = dataset.source.path
        if path is None:
            continue
        try:
            mode = os.stat(path).st_mode
        except OSError:
            continue
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            logger.warning("the file of dataset %s is readable by other users than the gateway's; chmod 600 it", name)


def _warn_unbounded_spaces(state: GatewayState) -> None:
    """A unit space without a longer cap renews its period cap for ever: allowed, but said loudly."""
    private = [name for name, dataset in state.catalog.datasets.items() if not dataset.public]
    for name in sorted({state.catalog.unit_space_of(dataset) for dataset in private}):
        example = state.catalog.datasets_in(name)[0]
        if len(state.catalog.space_budget(example).caps) < 2 and "aggregate" in state.catalog.datasets[example].actions:
            logger.warning(
                "unit space %s has no longer_cap: its period cap renews every period with no bound on the total",
                name,
            )


def _check_tables(state: GatewayState) -> None:
    """A PostgreSQL table's column types are checked against the catalog at start (and again, once,
    before its first query, if the database was not reachable now)."""
    for name, dataset in state.catalog.datasets.items():
        if dataset.source.kind == "postgresql" and "aggregate" in dataset.actions:
            try:
                if dataset.public:
                    state.sources.public.get(name, dataset)
                else:
                    state.sources.relation_for(name, dataset)
            except GatewayError as exc:
                logger.error("dataset %s is not ready: %s", name, exc.message)


def _assign_unit_spaces(state: GatewayState) -> None:
    """Spends recorded before their dataset joined a unit space count in it from now on: an upgrade (or a
    dataset newly put in a space) hands out no fresh budget."""
    spaces = {name: state.catalog.unit_space_of(name) for name in state.catalog.datasets}
    with state.sessions() as session:
        moved = budget_service.assign_unit_spaces(session, spaces)
        session.commit()
    if moved:
        logger.info("%d earlier spends now count in their dataset's unit space", moved)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = build_state(settings)
        make_private(settings.state_database_url)
        state.on_catalog = lambda version, catalog: set_catalog(metrics, version, len(catalog.datasets))
        set_catalog(metrics, 0, len(state.catalog.datasets))
        try:
            with state.sessions() as session:  # the datasets added or changed while earlier processes ran
                state.follow_changes(session, force=True, strict=True)
        except GatewayError:
            state.sources.close()  # a refused start leaves no connection open
            state.engine.dispose()
            raise
        _warn_readable_sources(state)
        if state.sources.snapshots is not None:  # files new or changed since the last start
            ingest_catalog(
                state.sources.snapshots,
                state.catalog,
                state.sessions,
                actor="system:ingest",
                instance=settings.instance,
            )
        _check_tables(state)
        _warn_unbounded_spaces(state)
        _assign_unit_spaces(state)
        # Requests run on this many threads; admission lets no more in than there are threads, and the
        # state DB pool has a connection for each (see gateway.store.database).
        to_thread.current_default_thread_limiter().total_tokens = settings.worker_threads
        app.state.gateway = state
        app.state.sessions = state.sessions
        app.state.rate_limiter = RateLimiter(
            settings.rate_limit_per_second,
            settings.rate_limit_burst,
            engine=state.engine if state.engine.dialect.name == "postgresql" else None,
        )
        overload.sessions = state.sessions
        overload.start()
        # The OpenAPI document (which the request metrics match refused paths against) is built here, not
        # on the event loop by the first request an overload refuses.
        app.openapi()
        try:
            with serving(metrics, state.sessions, settings.metrics_bind):
                yield
        finally:
            overload.stop()
            state.sources.close()
            state.engine.dispose()

    app = FastAPI(
        title="Datapoort",
        version=__version__,
        summary="Privacy-preserving data sharing gateway for Dutch municipalities",
        lifespan=lifespan,
        docs_url=None,  # served by gateway.http.docs, without a CDN
        redoc_url=None,
    )

    metrics = app.state.metrics = Metrics(settings.metrics_token_path)
    overload = OverloadLedger(instance=settings.instance, on_refusal=metrics.overload_refused)
    # The last added runs first: request context, then admission, then the body limit, then the app.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(
        AdmissionControl, max_in_flight=settings.in_flight, queue_seconds=settings.queue_seconds, ledger=overload
    )
    app.add_middleware(RequestContextMiddleware, instance=settings.instance)
    app.add_middleware(RequestMetrics, metrics=metrics)  # outermost: counts every answer, refusals too
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(query.router)
    app.include_router(catalog.router)
    app.include_router(admin.router)
    app.include_router(audit.router)
    app.include_router(extract.router)
    app.include_router(compare.router)
    app.include_router(peers.router)
    app.include_router(catalog_admin.router)
    app.include_router(docs.router)
    app.include_router(metrics_router)
    console.install(app)
    return app
