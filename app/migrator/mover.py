"""The migrator: moves due jobs from PostgreSQL to the Redis priority lists.

Each batch is one transaction: `SELECT ... FOR UPDATE SKIP LOCKED` marks up to a batch of
due jobs migrated_to_redis, one Redis pipeline pushes them, then the transaction commits.
A crash before the commit leaves the jobs queued (any pushed copy is dropped by the
worker's claim); several migrators never push the same job because of the row locks.

It wakes on LISTEN/NOTIFY when jobs become queued (a trigger on `jobs`); otherwise it
sleeps until the next run_at or the poll interval, whichever comes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field

import asyncpg
import redis.asyncio as aioredis

from app.db.hot import JobStore
from app.db.rows import MovedJob
from app.job_state import JobStateCache
from app.keys import Keys
from app.loops import Backoff, wait_any
from app.metrics import MetricsWriter
from app.redis_batch import redis_batch
from app.settings import Settings

log = logging.getLogger("hybridq.migrator")

NOTIFY_CHANNEL = "hybridq_jobs_queued"
# Under back-pressure (a queue full in Redis) nothing notifies us when workers drain
# it, so look again after this long.
FULL_QUEUE_RECHECK = 0.05


# The migrator keeps an estimate of each queue's Redis depth: the last LLEN plus what it
# pushed since (workers only lower it). It asks Redis again when an estimate reaches the
# bound, and at least this often, for the pushes of other migrators.
DEPTH_RECHECK = 1.0
# Seconds to wait for the LISTEN connection to close politely before dropping it.
LISTENER_CLOSE_TIMEOUT = 2.0


@dataclass(slots=True)
class MoveResult:
    moved: int = 0
    full_queues: list[str] = field(default_factory=list)


class Migrator:
    def __init__(
        self,
        *,
        store: JobStore,
        redis: aioredis.Redis,
        keys: Keys,
        settings: Settings,
        dsn: str | None = None,
        commit_delay: float = 0.0,
    ) -> None:
        """`commit_delay` is a test hook: seconds to wait between the Redis push and the
        commit, to widen the crash window in fault-injection tests. Production: 0."""
        self.store = store
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self.dsn = dsn or settings.database_url
        self.commit_delay = commit_delay
        self.state = JobStateCache(keys, settings.job_hash_ttl)
        self.metrics = MetricsWriter(keys)
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        # Set while the loop sleeps waiting for a notification or a timer (tests watch it).
        self.asleep = asyncio.Event()
        self.total_moved = 0
        self._depth: dict[str, int] = {}
        self._depth_checked_at = -math.inf

    def stop(self) -> None:
        self._stop.set()

    async def move_due_jobs(self) -> MoveResult:
        """Move due jobs in batches until a batch comes back short."""
        result = MoveResult()
        while True:
            result.full_queues = await self._full_queues()
            moved = await self._move_batch(result.full_queues)
            result.moved += moved
            if moved < self.settings.migrator_batch_size:
                return result

    async def _full_queues(self) -> list[str]:
        """Queues whose Redis lists hold REDIS_QUEUE_MAX_DEPTH jobs: not filled further.
        (Paused queues are left out by the move itself, in SQL.)"""
        bound = self.settings.redis_queue_max_depth
        stale = time.monotonic() - self._depth_checked_at > DEPTH_RECHECK
        if stale or any(d >= bound for d in self._depth.values()):
            queues = await self.store.active_queues()
            async with self.redis.pipeline(transaction=False) as pipe:
                for q in queues:
                    for key in self.keys.queue_lists(q):
                        pipe.llen(key)
                lengths = await pipe.execute()
            self._depth = {q: sum(lengths[3 * i : 3 * i + 3]) for i, q in enumerate(queues)}
            self._depth_checked_at = time.monotonic()
        return sorted(q for q, d in self._depth.items() if d >= bound)

    async def _move_batch(self, full: list[str]) -> int:
        async with self.store.pool.acquire() as conn, conn.transaction():
            jobs = await self.store.move_due_jobs(
                conn,
                self.settings.migrator_batch_size,
                full,
                idle_timeout=self.settings.move_idle_timeout,
            )
            if jobs:
                await self._push(jobs)
                if self.commit_delay:
                    await asyncio.sleep(self.commit_delay)
        # Committed: workers waiting on these rows can claim them now. The job hashes and
        # metrics are a cache, written after the commit so as not to hold the rows.
        if jobs:
            await self._after_move(jobs)
        self.total_moved += len(jobs)
        if jobs:
            log.debug("moved %d jobs to Redis", len(jobs))
        return len(jobs)

    async def _push(self, jobs: list[MovedJob]) -> None:
        """One LPUSH per list, each job to the list its priority routes it to, oldest
        first, and each queue's wake-up marker for idle workers; inside the move's
        transaction (a failed push rolls the move back)."""
        jobs.sort(key=lambda j: (j.priority, j.created_at))
        by_key: dict[str, list[str]] = defaultdict(list)
        queues: set[str] = set()
        for job in jobs:
            by_key[self.keys.route(job.queue_name, job.priority)].append(job.message)
            queues.add(job.queue_name)
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, messages in by_key.items():
                pipe.lpush(key, *messages)
            for queue in queues:
                pipe.zadd(self.keys.wake_marker(queue), {"1": 0})
            await pipe.execute()

    async def _after_move(self, jobs: list[MovedJob]) -> None:
        per_queue: dict[str, int] = defaultdict(int)
        for job in jobs:
            per_queue[job.queue_name] += 1
        for queue, moved in per_queue.items():
            self._depth[queue] = self._depth.get(queue, 0) + moved
        try:
            async with redis_batch(self.redis) as pipe:
                for job in jobs:
                    self.state.migrated(pipe, job.id, job.attempt_count)
                for queue, moved in per_queue.items():
                    self.metrics.count(pipe, "migrated", queue, moved)
        except Exception:
            log.warning("could not update job hashes in Redis", exc_info=True)

    # --- the loop -----------------------------------------------------------------

    async def run(self) -> None:
        """Move due jobs until `stop()`; survive PostgreSQL and Redis outages."""
        log.info("migrator started")
        backoff = Backoff()
        try:
            while not self._stop.is_set():
                self._wake.clear()
                try:
                    await self._ensure_listener()
                    result = await self.move_due_jobs()
                    timeout = await self._sleep_time(result)
                    backoff.reset()
                except Exception as exc:
                    delay = backoff.next()
                    log.warning("migrator pass failed (%s); retrying in %.1fs", exc, delay)
                    await self._close_listener()
                    await wait_any(self._stop, timeout=delay)
                    continue
                if timeout > 0:
                    self.asleep.set()
                    await wait_any(self._wake, self._stop, timeout=timeout)
                    self.asleep.clear()
        finally:
            await self._close_listener()
            log.info("migrator stopped after moving %d jobs", self.total_moved)

    async def _sleep_time(self, result: MoveResult) -> float:
        poll = self.settings.migrator_poll_interval
        if result.full_queues:
            poll = min(poll, FULL_QUEUE_RECHECK)
        seconds = await self.store.seconds_until_next_due(result.full_queues)
        if seconds is None:
            return poll
        return max(0.0, min(poll, seconds))

    def _on_notify(self, *_args: object) -> None:
        self._wake.set()

    async def _ensure_listener(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        conn = await asyncpg.connect(self.dsn, timeout=self.settings.db_command_timeout)
        await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
        self._listener = conn
        # Anything queued while we were not listening is found by the pass that follows.

    async def _close_listener(self) -> None:
        conn, self._listener = self._listener, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await conn.close(timeout=LISTENER_CLOSE_TIMEOUT)
