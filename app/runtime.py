"""The resources every process shares (pools, keys, handlers) and the one code path
that runs the migrator and workers, whether embedded in the API or on their own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel

from app.crypto import PayloadCipher
from app.db.actions import ActionStore
from app.db.hot import JobStore
from app.db.inserts import InsertStore
from app.db.listings import ListingStore
from app.db.pool import create_pool
from app.db.queues import QueueStore
from app.db.recovery import RecoveryStore
from app.db.retention import RetentionStore
from app.keys import Keys
from app.maintenance import Maintenance, PeriodicTask
from app.maintenance.reconcile import RedisReconciler
from app.maintenance.rescue import LeaseRescue
from app.maintenance.retention import Retention
from app.migrator.mover import Migrator
from app.registry import HandlerRegistry, default_registry, load_handler_modules
from app.settings import Settings
from app.worker.runner import Worker

log = logging.getLogger("hybridq")

# Seconds beyond SHUTDOWN_GRACE_PERIOD that a stopping process gives its tasks to hand
# unfinished jobs back (cancel handlers, flush outcomes, release): the worker's own
# deadlines (app.worker.runner.HANDLER_CANCEL_WAIT, RECORDER_CLOSE_TIMEOUT) fit in it.
# docker/compose.yaml's stop_grace_period must leave room for it.
HAND_BACK_ALLOWANCE = 15.0


def make_redis(settings: Settings) -> aioredis.Redis:
    """One client (with its pool) per process. Blocking pops need a longer socket timeout
    than ordinary calls, so the socket timeout leaves room for the fetch timeout.

    With REDIS_SENTINELS the client asks the Sentinels for the primary at every new
    connection, and a connection to a demoted primary (READONLY) is dropped and made
    again to the new one, so a failover needs no restart; in-flight calls fail with a
    ConnectionError that every loop already retries."""
    options: dict[str, Any] = {
        "socket_timeout": settings.redis_timeout + settings.worker_fetch_timeout,
        "socket_connect_timeout": settings.redis_timeout,
        "health_check_interval": 30,
        "max_connections": max(16, settings.db_pool_max_size * 2),
    }
    if not settings.redis_sentinels:
        client: aioredis.Redis = aioredis.Redis.from_url(settings.redis_url, **options)
        return client
    url = urlsplit(settings.redis_url)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        settings.sentinel_addresses,
        sentinel_kwargs={
            "password": settings.redis_sentinel_password or None,
            "socket_timeout": settings.redis_timeout,
            "socket_connect_timeout": settings.redis_timeout,
        },
    )
    master: aioredis.Redis = sentinel.master_for(
        settings.redis_sentinel_master,
        db=int(url.path.lstrip("/") or 0),
        username=unquote(url.username) if url.username else None,
        password=unquote(url.password) if url.password else None,
        ssl=url.scheme == "rediss",
        **options,
    )
    return master


@dataclass(slots=True)
class Runtime:
    settings: Settings
    pool: asyncpg.Pool
    redis: aioredis.Redis
    keys: Keys
    registry: HandlerRegistry
    cipher: PayloadCipher
    # The SQL, one store per concern, all on `pool`.
    store: JobStore  # the hot path: move, claim, outcomes
    recovery: RecoveryStore
    inserts: InsertStore
    actions: ActionStore
    listings: ListingStore
    queues: QueueStore
    retention: RetentionStore

    def worker(self, **overrides: object) -> Worker:
        return Worker(
            store=self.store,
            redis=self.redis,
            keys=self.keys,
            registry=self.registry,
            settings=self.settings,
            cipher=self.cipher,
            **overrides,  # type: ignore[arg-type]
        )

    def migrator(self, **overrides: object) -> Migrator:
        return Migrator(
            store=self.store,
            redis=self.redis,
            keys=self.keys,
            settings=self.settings,
            **overrides,  # type: ignore[arg-type]
        )

    def maintenance(self) -> Maintenance:
        """The periodic tasks that run beside every migrator."""
        tasks: list[PeriodicTask] = [
            LeaseRescue(self.recovery, self.settings),
            RedisReconciler(self.recovery, self.redis, self.keys, self.settings),
            Retention(
                store=self.retention,
                redis=self.redis,
                keys=self.keys,
                settings=self.settings,
            ),
        ]
        return Maintenance(tasks)


async def warn_if_redis_can_evict(redis: aioredis.Redis) -> None:
    """Queue lists must never be evicted: warn unless maxmemory-policy is noeviction."""
    try:
        policy = (await redis.config_get("maxmemory-policy")).get("maxmemory-policy")
    except Exception as exc:  # CONFIG may be disabled on managed Redis
        log.warning("could not read Redis maxmemory-policy (%s); it must be noeviction", exc)
        return
    if policy not in (None, "noeviction", b"noeviction"):
        log.warning(
            "Redis maxmemory-policy is %r: the server may evict queue lists. Set "
            "maxmemory-policy noeviction on the server behind REDIS_URL.",
            policy,
        )


@contextlib.asynccontextmanager
async def open_runtime(
    settings: Settings, registry: HandlerRegistry | None = None
) -> AsyncIterator[Runtime]:
    """Import handler modules, open the pools, register the handlers' queues; close all."""
    registry = registry if registry is not None else default_registry
    load_handler_modules(settings.handler_modules)
    cipher = PayloadCipher(settings.encryption_keys, settings.encrypted_fields)
    pool = await create_pool(
        settings.database_url,
        min_size=settings.db_pool_min_size,
        max_size=settings.db_pool_max_size,
        command_timeout=settings.db_command_timeout,
    )
    redis = make_redis(settings)
    try:
        store = JobStore(pool)
        await store.ensure_queues(registry.queue_names())
        await warn_if_redis_can_evict(redis)
        yield Runtime(
            settings=settings,
            pool=pool,
            redis=redis,
            keys=Keys(settings.redis_prefix),
            registry=registry,
            cipher=cipher,
            store=store,
            recovery=RecoveryStore(pool),
            inserts=InsertStore(pool),
            actions=ActionStore(pool),
            listings=ListingStore(pool),
            queues=QueueStore(pool),
            retention=RetentionStore(pool),
        )
    finally:
        await redis.aclose()
        await pool.close()


class BackgroundServices:
    """Runs a migrator (with its maintenance tasks) and/or a worker as tasks, and stops
    them gracefully."""

    def __init__(
        self,
        migrator: Migrator | None,
        worker: Worker | None,
        maintenance: Maintenance | None = None,
    ) -> None:
        self.migrator = migrator
        self.worker = worker
        self.maintenance = maintenance
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if self.migrator is not None:
            self._tasks.append(asyncio.create_task(self.migrator.run(), name="migrator"))
        if self.maintenance is not None:
            self._tasks.append(asyncio.create_task(self.maintenance.run(), name="maintenance"))
        if self.worker is not None:
            self._tasks.append(asyncio.create_task(self.worker.run(), name="worker"))

    def stop(self) -> None:
        if self.migrator is not None:
            self.migrator.stop()
        if self.maintenance is not None:
            self.maintenance.stop()
        if self.worker is not None:
            self.worker.stop()

    async def wait(self) -> None:
        """Wait until every service returned; re-raise the first crash."""
        if self._tasks:
            results = await asyncio.gather(*self._tasks, return_exceptions=True)
            for r in results:
                if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
                    raise r

    async def wait_first(self) -> None:
        """Return when any service stops (a crash or a burst worker that finished)."""
        if self._tasks:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)

    async def shutdown(self, grace: float) -> None:
        self.stop()
        if not self._tasks:
            return
        # Workers wait `grace` for in-flight jobs, then hand back.
        _done, pending = await asyncio.wait(self._tasks, timeout=grace + HAND_BACK_ALLOWANCE)
        for t in pending:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                exc = t.exception() if t.done() and not t.cancelled() else None
                if exc is not None:
                    log.error("%s crashed", t.get_name(), exc_info=exc)
