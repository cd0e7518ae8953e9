"""The app factory: FastAPI front door, with the migrator and a worker embedded by default."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI

from app.api import jobs, metrics
from app.api.auth import AUTH_RESPONSES, Authenticator, parse_api_keys, require
from app.api.dead_letters import routes as dead_letters
from app.api.errors import install_error_handlers
from app.api.health import routes as health
from app.api.jobs.creation import GROUP_COMMIT_CLOSE_TIMEOUT, group_commit
from app.api.limits import RequestLimits
from app.api.openapi import restore_null_examples
from app.api.queues import routes as queues
from app.api.suppressions import routes as suppressions
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
dead letters), which an operator may replay (`queued`) or discard (`discarded`). A queued
or migrated job may be cancelled (`cancelled`).

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
            services = BackgroundServices(migrator, worker, maintenance)
            services.start()
            try:
                yield
            finally:
                await services.shutdown(settings.shutdown_grace_period)

    app = FastAPI(
        title="hybridq",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.authenticator = authenticator
    install_error_handlers(app)
    app.add_middleware(
        RequestLimits, max_bytes=settings.max_request_bytes, max_depth=settings.max_json_depth
    )

    def include(router: APIRouter, scope: str | None) -> None:
        if scope is None:
            app.include_router(router)
        else:
            app.include_router(router, dependencies=[require(scope)], responses=AUTH_RESPONSES)

    include(jobs.router, "producer")  # cancel also needs admin (on the route)
    include(dead_letters.router, "admin")
    include(queues.router, "admin")
    include(suppressions.router, "admin")
    include(health.router, None)  # liveness and readiness stay public
    include(health.admin_router, "admin")
    include(metrics.router, None if settings.metrics_public else "admin")

    def openapi() -> dict[str, Any]:
        document = FastAPI.openapi(app)  # built once, then cached
        restore_null_examples(document)
        return document

    app.openapi = openapi  # type: ignore[method-assign]
    return app


@asynccontextmanager
async def serving(app: FastAPI, runtime: Runtime) -> AsyncIterator[None]:
    """Attach a runtime to the app for requests, with what the routes share (the group
    commit of POST /jobs); on exit, answer what the group commit holds and detach."""
    group = group_commit(runtime)
    group.start()
    app.state.runtime = runtime
    app.state.group_commit = group
    try:
        yield
    finally:
        await group.close(GROUP_COMMIT_CLOSE_TIMEOUT)


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
