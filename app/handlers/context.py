"""What the handlers work with: their settings, a PostgreSQL pool and a Redis client of
their own, and the services built on them (sender, webhooks, bounces, analytics,
warm-up).

A handler receives only its Job, so the context is opened by the first job a process
runs (from the environment, as the process's own settings are) and kept for the life of
the process's event loop; `close_context()`, a shutdown hook, closes it when the
process's services stop. Tests build their own with `HandlerContext.open(settings)` and
`use_context()`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis

from app.circuit import CircuitBreakers
from app.db.pool import create_pool
from app.db.suppressions import SuppressionStore
from app.handlers.analytics import AnalyticsRunner
from app.handlers.bounces import BounceProcessor
from app.handlers.events import EventStore
from app.handlers.sender import EmailSender, SmtpServer
from app.handlers.warmup import Warmup
from app.handlers.webhooks import WebhookDeliverer
from app.keys import Keys
from app.registry import on_shutdown
from app.runtime import make_redis
from app.settings import Settings

# A warm-up run may take this long; its mailbox lock lasts as long.
WARMUP_TIMEOUT = 3600.0


@dataclass(slots=True)
class HandlerContext:
    settings: Settings
    pool: asyncpg.Pool
    redis: aioredis.Redis
    sender: EmailSender
    webhooks: WebhookDeliverer
    bounces: BounceProcessor
    analytics: AnalyticsRunner
    warmup: Warmup

    @classmethod
    def build(cls, settings: Settings, pool: asyncpg.Pool, redis: aioredis.Redis) -> HandlerContext:
        """The services on an open pool and Redis client."""
        keys = Keys(settings.redis_prefix, cluster=settings.cluster_mode)
        breakers = CircuitBreakers(
            redis,
            keys,
            failure_threshold=settings.breaker_failure_threshold,
            open_seconds=settings.breaker_open_seconds,
        )
        events, suppressions = EventStore(pool), SuppressionStore(pool)
        sender = EmailSender(
            SmtpServer.from_settings(settings),
            events=events,
            suppressions=suppressions,
            breakers=breakers,
            default_from=settings.email_from,
        )
        return cls(
            settings=settings,
            pool=pool,
            redis=redis,
            sender=sender,
            webhooks=WebhookDeliverer(
                secrets={k: v.get_secret_value() for k, v in settings.webhook_secrets.items()},
                allowed_hosts=settings.webhook_allowed_hosts,
                timeout=settings.webhook_timeout,
                breakers=breakers,
            ),
            bounces=BounceProcessor(events, suppressions),
            analytics=AnalyticsRunner(pool),
            warmup=Warmup(sender, redis, keys, lock_seconds=WARMUP_TIMEOUT),
        )

    @classmethod
    async def open(cls, settings: Settings) -> HandlerContext:
        """Open a pool and a Redis client of its own (a few connections: handlers wait
        on the network far more than on PostgreSQL)."""
        pool = await create_pool(
            settings.database_url,
            min_size=1,
            max_size=max(2, settings.db_pool_max_size // 2),
            command_timeout=settings.db_command_timeout,
        )
        return cls.build(settings, pool, make_redis(settings))

    async def close(self) -> None:
        await self.redis.aclose()
        await self.pool.close()


# Per event loop: the context opened from the environment by `context()` (closed by
# `close_context()`), and one given by `use_context()`, which its caller closes.
_opened: dict[asyncio.AbstractEventLoop, asyncio.Task[HandlerContext]] = {}
_given: dict[asyncio.AbstractEventLoop, HandlerContext] = {}


async def _open_from_environment() -> HandlerContext:
    return await HandlerContext.open(Settings())


async def context() -> HandlerContext:
    """This event loop's context, opened by the first caller (the others wait for it)."""
    loop = asyncio.get_running_loop()
    given = _given.get(loop)
    if given is not None:
        return given
    opening = _opened.get(loop)
    if opening is None or (opening.done() and opening.exception() is not None):
        # A failed opening (PostgreSQL down) is tried again by the next job.
        opening = _opened[loop] = loop.create_task(_open_from_environment())
    return await asyncio.shield(opening)


@contextlib.asynccontextmanager
async def use_context(ctx: HandlerContext) -> AsyncIterator[HandlerContext]:
    """Make `ctx` the context of this event loop for the block (tests)."""
    loop = asyncio.get_running_loop()
    previous = _given.get(loop)
    _given[loop] = ctx
    try:
        yield ctx
    finally:
        if previous is None:
            _given.pop(loop, None)
        else:
            _given[loop] = previous


@on_shutdown
async def close_context() -> None:
    """Close the context `context()` opened in this event loop, if it did: run when the
    process's services stop (a shutdown hook), once its jobs have ended. An opening
    still in progress is cancelled. The next job, if any, opens a new one."""
    opening = _opened.pop(asyncio.get_running_loop(), None)
    if opening is None:
        return
    opening.cancel()  # if still in progress
    await asyncio.wait([opening])
    if not opening.cancelled() and opening.exception() is None:
        await opening.result().close()
