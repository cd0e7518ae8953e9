"""The app factory: FastAPI front door, with the migrator and a worker embedded by default."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.api import dead_letter, health, job_ops, jobs, metrics, queue_health, queues
from app.api.errors import install_error_handlers
from app.logs import configure_logging
from app.registry import HandlerRegistry
from app.runtime import BackgroundServices, open_runtime
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

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_runtime(settings, registry) as runtime:
            app.state.runtime = runtime
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
    install_error_handlers(app)
    app.include_router(jobs.router)
    app.include_router(job_ops.router)
    app.include_router(dead_letter.router)
    app.include_router(queues.router)
    app.include_router(health.router)
    app.include_router(queue_health.router)
    app.include_router(metrics.router)
    return app


def factory() -> FastAPI:
    """Entry for `uvicorn --factory app.main:factory`: settings from the environment."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)
