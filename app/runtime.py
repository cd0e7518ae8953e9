"""The resources every process shares (pools, keys, handlers) and the one code path
that runs the migrator and workers, whether embedded in the API or on their own."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import unquote, urlsplit

import asyncpg
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

from app.cluster import HybridCluster, is_cluster, primaries
from app.crypto import PayloadCipher
from app.db.cancels import CancelStore
from app.db.hot import JobStore
from app.db.pool import create_pool
from app.db.queues import QueueStore
from app.db.recovery import RecoveryStore
from app.db.retention import RetentionStore
from app.db.schedules import ScheduleStore
from app.keys import Keys
from app.registry import HandlerRegistry, default_registry, load_handler_modules
from app.settings import Settings
from app.supervise import Supervisor

if TYPE_CHECKING:
    from app.counts_cache import CountsCache
    from app.db.actions import ActionStore
    from app.db.inserts import InsertStore
    from app.db.listings import ListingStore
    from app.maintenance import Maintenance
    from app.maintenance.scheduler import Clock
    from app.migrator.mover import Migrator
    from app.worker.runner import Worker

log = logging.getLogger("hybridq")


def make_redis(settings: Settings) -> aioredis.Redis:
    """One client (with its pool) per process. Blocking pops need a longer socket timeout
    than ordinary calls, so the socket timeout leaves room for the fetch timeout. The pool
    blocks (up to REDIS_TIMEOUT) when all its connections are busy, rather than failing
    at once: a burst of /metrics scrapes waits its turn instead of answering 503, and a
    migrator's push is not refused (which would roll its move back).

    With REDIS_SENTINELS the client asks the Sentinels for the primary at every new
    connection, and a connection to a demoted primary (READONLY) is dropped and made
    again to the new one, so a failover needs no restart; in-flight calls fail with a
    ConnectionError that every loop already retries."""
    options: dict[str, Any] = {
        "socket_timeout": settings.redis_timeout + settings.worker_fetch_timeout,
        "socket_connect_timeout": settings.redis_timeout,
        "health_check_interval": 30,
        "max_connections": max(16, settings.db_pool_max_size * 2),
        "timeout": settings.redis_timeout,  # of the blocking pool: wait for a connection
    }
    if settings.cluster_mode:
        return make_cluster(settings, options)
    if not settings.redis_sentinels:
        pool = aioredis.BlockingConnectionPool.from_url(settings.redis_url, **options)
        return aioredis.Redis.from_pool(pool)  # closing the client closes the pool
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
        connection_pool_class=BlockingSentinelPool,
        db=int(url.path.lstrip("/") or 0),
        username=unquote(url.username) if url.username else None,
        password=unquote(url.password) if url.password else None,
        ssl=url.scheme == "rediss",
        **options,
    )
    return master


def make_cluster(settings: Settings, options: dict[str, Any]) -> aioredis.Redis:
    """A Redis Cluster client (app.cluster) that discovers the nodes from REDIS_URL's.
    redis-py's own retries are off: every loop already retries, and a retry of a
    pipeline that reached a dead shard would stall the healthy ones' work with it."""
    del options["timeout"]  # connections per node are not pooled with a wait
    options["max_connections"] = 2**31  # a node's connections: one per concurrent call
    cluster = HybridCluster.from_url(
        settings.redis_node_url, retry=Retry(NoBackoff(), 0), **options
    )
    # Typed as the plain client: the cluster client answers the same commands, and the
    # code that must act per shard asks app.cluster.is_cluster.
    return cast(aioredis.Redis, cluster)


class BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """The Sentinel-managed pool (finds the primary) that also blocks when it is full."""


@dataclass
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
    queues: QueueStore
    retention: RetentionStore
    schedules: ScheduleStore
    cancels: CancelStore

    # The API's own stores are made at their first use, so that a worker or migrator
    # process never imports them (its memory); close_api_stores settles them.
    @cached_property
    def inserts(self) -> InsertStore:
        """Job inserts; with DIRECT_PUSH, due jobs are pushed after their commit."""
        from app.db.inserts import InsertStore

        direct = None
        if self.settings.direct_push:
            from app.direct import DirectPush

            direct = DirectPush.of(self.pool, self.redis, self.keys, self.settings)
        return InsertStore(self.pool, direct)

    @cached_property
    def actions(self) -> ActionStore:
        from app.db.actions import ActionStore

        return ActionStore(self.pool)

    @cached_property
    def listings(self) -> ListingStore:
        from app.db.listings import ListingStore

        return ListingStore(self.pool)

    @cached_property
    def counts(self) -> CountsCache:
        """The job counts by status that /metrics, /queues, /health/queues and the
        dashboard share (app.counts_cache)."""
        from app.counts_cache import CountsCache

        listings = self.listings
        return CountsCache(
            lambda: listings.count_jobs(timeout=self.settings.stats_timeout),
            max_age=self.settings.stats_max_age,
        )

    async def close_api_stores(self) -> None:
        """Cancel a count in progress and wait for the direct pushes asked for (of the
        stores that were made), before the pools close under them."""
        made = vars(self)
        if "counts" in made:
            await self.counts.close()
        if "inserts" in made and self.inserts.direct is not None:
            await self.inserts.direct.flushed()

    # Each role's code is imported when its service is made: a worker process never
    # loads the migrator's, nor a migrator process the worker's (their memory).
    def worker(self, **overrides: object) -> Worker:
        from app.worker.runner import Worker

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
        from app.migrator.mover import Migrator

        return Migrator(
            store=self.store,
            redis=self.redis,
            keys=self.keys,
            settings=self.settings,
            **overrides,  # type: ignore[arg-type]
        )

    def maintenance(self, clock: Clock | None = None) -> Maintenance:
        """The periodic tasks that run beside every migrator (`clock`: the scheduler's,
        for tests)."""
        from app.maintenance import Maintenance, PeriodicTask
        from app.maintenance.cancels import AbandonedCancels
        from app.maintenance.inflight import InflightRecovery
        from app.maintenance.reconcile import RedisReconciler
        from app.maintenance.rescue import LeaseRescue
        from app.maintenance.retention import Retention
        from app.maintenance.scheduler import Scheduler

        tasks: list[PeriodicTask] = [
            AbandonedCancels(self.cancels, self.settings),
            LeaseRescue(self.recovery, self.settings, self.redis, self.keys),
            RedisReconciler(self.recovery, self.redis, self.keys, self.settings),
            InflightRecovery(self.recovery, self.redis, self.keys, self.settings),
            Retention(
                store=self.retention,
                redis=self.redis,
                keys=self.keys,
                settings=self.settings,
            ),
            Scheduler(self.schedules, self.settings, clock),
        ]
        return Maintenance(tasks)


async def warn_if_redis_can_evict(redis: aioredis.Redis) -> None:
    """Queue lists must never be evicted: warn unless maxmemory-policy is noeviction (on
    every primary of a Redis Cluster)."""
    try:
        if is_cluster(redis):
            for node in await primaries(redis):
                await _warn_if_can_evict(redis, target_nodes=node)
            return
        await _warn_if_can_evict(redis)
    except Exception as exc:  # CONFIG may be disabled on managed Redis
        log.warning("could not read Redis maxmemory-policy (%s); it must be noeviction", exc)


async def _warn_if_can_evict(redis: aioredis.Redis, **target: Any) -> None:
    policy = (await redis.config_get("maxmemory-policy", **target)).get("maxmemory-policy")
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
    runtime: Runtime | None = None
    try:
        store = JobStore(pool)
        schedules = ScheduleStore(pool)
        declared = registry.schedules()
        await store.ensure_queues(
            sorted({*registry.queue_names(), *(s.queue_name for s in declared)})
        )
        # Their payloads are stored sealed, as every job's is (ENCRYPTED_FIELDS).
        await schedules.sync_code(
            declared, [cipher.encrypt(s.queue_name, s.payload) for s in declared]
        )
        await warn_if_redis_can_evict(redis)
        runtime = Runtime(
            settings=settings,
            pool=pool,
            redis=redis,
            keys=Keys(settings.redis_prefix, cluster=settings.cluster_mode),
            registry=registry,
            cipher=cipher,
            store=store,
            recovery=RecoveryStore(pool),
            queues=QueueStore(pool),
            retention=RetentionStore(pool),
            schedules=schedules,
            cancels=CancelStore(pool),
        )
        yield runtime
    finally:
        await registry.shut_down()  # its services have stopped: the handlers' own hooks
        if runtime is not None:
            await runtime.close_api_stores()
        await redis.aclose()
        await pool.close()


class BackgroundServices(Supervisor):
    """A migrator (with its maintenance tasks) and/or a worker, supervised
    (app.supervise): restarted with backoff when `restart`, else a crash ends the
    process. `rebuild_worker` makes a fresh worker for a restart."""

    def __init__(
        self,
        migrator: Migrator | None,
        worker: Worker | None,
        maintenance: Maintenance | None = None,
        *,
        restart: bool = False,
        rebuild_worker: Callable[[], Worker] | None = None,
    ) -> None:
        super().__init__(restart=restart)
        if migrator is not None:
            self.add("migrator", migrator)
        if maintenance is not None:
            self.add("maintenance", maintenance)
        if worker is not None:
            self.add("worker", worker, rebuild_worker, ends_by_itself=worker.burst)

    @property
    def worker(self) -> Worker | None:
        from app.worker.runner import Worker

        service = self.service("worker")
        return service if isinstance(service, Worker) else None
