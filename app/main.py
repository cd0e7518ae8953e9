"""The app factory: FastAPI front door, with the migrator and a worker embedded by default."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi_offline import FastAPIOffline

from app.api import metrics
from app.api.auth import AUTH_RESPONSES, Authenticator, parse_api_keys, require
from app.api.dead_letters import routes as dead_letters
from app.api.docs import ASSETS, install_docs
from app.api.errors import install_error_handlers
from app.api.gate import AuthGate
from app.api.health import routes as health
from app.api.jobs import routes as jobs
from app.api.jobs.created import CreatedCounter
from app.api.jobs.creation import GROUP_COMMIT_CLOSE_TIMEOUT, group_commit
from app.api.limits import RequestLimits
from app.api.openapi import restore_null_examples
from app.api.queues import routes as queues
from app.api.schedules import routes as schedules
from app.api.suppressions import routes as suppressions
from app.dashboard import install_dashboard
from app.logs import configure_logging
from app.registry import HandlerRegistry
from app.runtime import BackgroundServices, Runtime, open_runtime
from app.settings import Settings

log = logging.getLogger("hybridq.api")

DESCRIPTION = """
A job queue with PostgreSQL durability at Redis speed.

Jobs are stored in PostgreSQL (the truth); a migrator moves due jobs to Redis priority
lists; workers run the handler registered for the queue and record every attempt.

Lifecycle: `queued → migrated_to_redis → running → completed`; a failed attempt with
attempts left goes back to `queued` with a later `run_at`; with none left, `failed` (the
dead letters), which an operator may replay (`queued`) or discard (`discarded`). A job
may be cancelled (`cancelled`): at once if it has not started, by its worker if it runs.
Periodic jobs are made by `/schedules`.

Lists are cursor-paginated: pass `next_cursor` back as `cursor`. Input errors are 4xx
with `{"detail": [{"loc": [...], "msg": ..., "type": ...}]}`; 404 and 409 are
`{"detail": "..."}`.
"""


def create_app(
    settings: Settings | None = None, registry: HandlerRegistry | None = None
) -> FastAPI:
    """Build the app; pools open in the lifespan, never at import."""
    settings = settings or Settings()
    authenticator = build_authenticator(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_runtime(settings, registry) as runtime, serving(app, runtime):
            migrator = runtime.migrator() if settings.embed_migrator else None
            worker = None
            if settings.embed_worker:
                if len(runtime.registry):
                    worker = runtime.worker()
                else:
                    log.warning("EMBED_WORKER is on but no handler is registered: no worker")
            maintenance = runtime.maintenance() if settings.embed_migrator else None
            # Embedded services are restarted with backoff if one crashes: the API goes on
            # serving, and /health/ready answers 503 naming it while it is down.
            services = BackgroundServices(
                migrator,
                worker,
                maintenance,
                restart=True,
                rebuild_worker=runtime.worker if worker is not None else None,
            )
            app.state.services = services
            services.start()
            try:
                yield
            finally:
                await services.shutdown(settings.shutdown_grace_period)

    # FastAPI's own /docs and /redoc load their assets from a CDN (blank offline):
    # FastAPIOffline mounts the ones its package ships, and app.api.docs serves the pages.
    app = FastAPIOffline(
        title="hybridq",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        static_url=ASSETS,
    )
    install_docs(app)
    app.state.settings = settings
    app.state.authenticator = authenticator
    install_error_handlers(app)
    app.add_middleware(
        RequestLimits,
        max_bytes=settings.max_request_bytes,
        max_depth=settings.max_json_depth,
        body_timeout=settings.request_body_timeout,
        path_limits={
            ("POST", "/jobs"): min(settings.max_job_request_bytes, settings.max_request_bytes)
        },
    )
    app.add_middleware(AuthGate)  # added last, so it runs first: no body is read before it

    def include(router: APIRouter, scope: str | None) -> None:
        if scope is None:
            app.include_router(router)
        else:
            app.include_router(router, dependencies=[require(scope)], responses=AUTH_RESPONSES)

    include(jobs.router, "producer")  # cancel also needs admin (on the route)
    include(dead_letters.router, "admin")
    include(queues.router, "admin")
    include(suppressions.router, "admin")
    include(schedules.router, "admin")
    include(health.router, None)  # liveness and readiness stay public
    include(health.admin_router, "admin")
    include(metrics.router, None if settings.metrics_public else "admin")
    install_dashboard(app, settings, authenticator)  # /dashboard: its own sessions

    def openapi() -> dict[str, Any]:
        document = FastAPI.openapi(app)  # built once, then cached
        restore_null_examples(document)
        return document

    app.openapi = openapi  # type: ignore[method-assign]
    return app


@asynccontextmanager
async def serving(app: FastAPI, runtime: Runtime) -> AsyncIterator[None]:
    """Attach a runtime to the app for requests, with what the routes share (the group
    commit of POST /jobs, the counter of created jobs); on exit, answer what the group
    commit holds and write what the counter holds."""
    counter = CreatedCounter(runtime)
    counter.start()
    group = group_commit(runtime, counter)
    group.start()
    app.state.runtime = runtime
    app.state.group_commit = group
    app.state.created_counter = counter
    try:
        yield
    finally:
        await group.close(GROUP_COMMIT_CLOSE_TIMEOUT)
        await counter.close(runtime.settings.redis_timeout)


def build_authenticator(settings: Settings) -> Authenticator:
    """Secure by default: with auth on and no key configured, the API refuses to start."""
    if not settings.auth_enabled:
        log.warning(
            "AUTH_ENABLED is false: every endpoint is open to anyone who can reach it. "
            "Use this for local development only."
        )
        return Authenticator([], enabled=False)
    keys = parse_api_keys(settings.api_keys)
    if not keys:
        raise RuntimeError(
            "AUTH_ENABLED is true but API_KEYS is empty: configure at least one key "
            "(name:scope:sha256:<hex>, see `python -m app.api.auth new`) or set "
            "AUTH_ENABLED=false for local development"
        )
    for key in keys:
        if key.plaintext:
            log.warning(
                "API key %r is configured in plain text; store its sha256 instead "
                "(python -m app.api.auth hash <key>)",
                key.name,
            )
    return Authenticator(keys, enabled=True)


def factory() -> FastAPI:
    """Entry for `uvicorn --factory app.main:factory`: settings from the environment."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)
