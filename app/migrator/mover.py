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
from redis.exceptions import RedisClusterException, RedisError

from app.cluster import by_shard, is_cluster, per_shard
from app.db.hot import JobStore
from app.db.limits import LimitStore, QueueLimits, budget
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
# it, so look at its Redis depth again after this long (a pass follows once it has room).
FULL_QUEUE_RECHECK = 0.05


# The migrator keeps an estimate of each queue's Redis depth: the last LLEN plus what it
# pushed since (workers only lower it). It asks Redis again when an estimate reaches the
# bound, and at least this often, for the pushes of other migrators.
DEPTH_RECHECK = 1.0
# A limited queue holding back due jobs is looked at again after LIMIT_RECHECK_MIN once
# it moved something, then 1.5 times later each pass nothing freed up, up to the max.
LIMIT_RECHECK_MIN = 0.01
LIMIT_RECHECK_MAX = 0.25
# A rate-limited queue is moved at the limit's pace, in steps about RATE_TICK apart: it
# earns rate_limit / rate_period jobs a second of credit, at most RATE_BURST seconds' worth
# (and at least one job).
RATE_TICK = 0.05
RATE_BURST = 0.25
# Seconds to wait for the LISTEN connection to close politely before dropping it.
LISTENER_CLOSE_TIMEOUT = 2.0


@dataclass(slots=True)
class MoveResult:
    moved: int = 0
    full_queues: list[str] = field(default_factory=list)
    # Seconds until a limited queue holding back due jobs may move again (None: none).
    limit_wake: float | None = None


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
        self.limits = LimitStore(store.pool)
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self.dsn = dsn or settings.database_url
        self.commit_delay = commit_delay
        self.state = JobStateCache(keys, settings.job_hash_ttl)
        self.metrics = MetricsWriter(keys)
        self._cluster = is_cluster(redis)
        self._held: set[str] = set()  # Redis Cluster: queues whose shard failed
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        # Set while the loop sleeps waiting for a notification or a timer (tests watch it).
        self.asleep = asyncio.Event()
        self.total_moved = 0
        self.passes = 0  # completed passes of run() (tests watch it)
        self._queues: list[QueueLimits] = []
        self._depth: dict[str, int] = {}
        self._depth_checked_at = -math.inf
        self._limit_recheck = LIMIT_RECHECK_MIN
        # Pace of rate-limited queues: credit in jobs, and when it was last earned.
        self._credit: dict[str, float] = {}
        self._paced_at: dict[str, float] = {}

    def stop(self) -> None:
        self._stop.set()

    async def move_due_jobs(self) -> MoveResult:
        """Promote due scheduled jobs, then move due jobs of every active queue that has
        room in Redis: unlimited queues in batches until each comes back short, then each
        limited queue within its limits. A paused or full queue costs no query."""
        batch = self.settings.migrator_batch_size
        bound = self.settings.redis_queue_max_depth
        while await self.store.promote_due_jobs(batch) >= batch:
            pass
        result = MoveResult()
        full = await self._full_queues()
        movable = [q for q in self._queues if q.name not in full]
        plain = [q.name for q in movable if not q.limited]
        if not self._cluster:
            result.moved += await self._move_plain(plain)
        else:  # one move per shard: a shard that fails holds back only its own queues
            for group in (await by_shard(self.redis, plain, self.keys.wake_marker)).values():
                try:
                    result.moved += await self._move_plain(group)
                except (RedisError, RedisClusterException) as exc:
                    self._shard_failed(group, exc)
        moved_limited = False
        for q in movable:
            if q.limited:
                try:
                    moved, wake = await self._move_limited(q.name)
                except (RedisError, RedisClusterException) as exc:
                    if not self._cluster:
                        raise
                    self._shard_failed([q.name], exc)
                    continue
                result.moved += moved
                moved_limited = moved_limited or moved > 0
                if wake is not None:
                    result.limit_wake = min(result.limit_wake or math.inf, wake)
        # Full now (after this pass's pushes, by the estimates): watched while asleep.
        result.full_queues = sorted(q for q, d in self._depth.items() if d >= bound)
        # A limited queue waiting for a slot: look again soon after it moved something,
        # less and less often while nothing frees up (no busy loop, no notification).
        if moved_limited:
            self._limit_recheck = LIMIT_RECHECK_MIN
        elif result.limit_wake is not None:
            self._limit_recheck = min(LIMIT_RECHECK_MAX, self._limit_recheck * 1.5)
        return result

    async def _move_plain(self, plain: list[str]) -> int:
        """Batches of these unlimited queues until each comes back short (or full)."""
        batch = self.settings.migrator_batch_size
        bound = self.settings.redis_queue_max_depth
        moved = 0
        while plain:
            per_queue = await self._move_batch(plain)
            moved += sum(per_queue.values())
            plain = [
                q for q in plain if per_queue.get(q, 0) >= batch and self._depth.get(q, 0) < bound
            ]
        return moved

    def _shard_failed(self, queues: list[str], exc: BaseException) -> None:
        """Redis Cluster: these queues' shard failed. They count as full (not moved) until
        a reading of their depth succeeds; the other queues go on."""
        if not self._held.issuperset(queues):  # once while it lasts, not every pass
            log.warning("queue(s) %s: their Redis shard failed (%r); held back", queues, exc)
        self._held.update(queues)
        for q in queues:
            self._depth[q] = self.settings.redis_queue_max_depth

    async def _read_depths(self, queues: list[str]) -> list[int]:
        """Jobs in each queue's Redis lists. On a Redis Cluster, one pipeline per shard;
        the queues of a shard that fails read as full."""
        if not self._cluster:
            return await self._depth_pipeline(queues)
        bound = self.settings.redis_queue_max_depth
        depths: dict[str, int] = {}
        for _shard, group, result in await per_shard(
            self.redis, queues, self.keys.wake_marker, self._depth_pipeline
        ):
            if isinstance(result, BaseException):
                self._shard_failed(group, result)
                result = [bound] * len(group)
            elif self._held.intersection(group):
                log.warning("queue(s) %s: their Redis shard answers again", group)
                self._held.difference_update(group)
            depths.update(zip(group, result, strict=True))
        return [depths[q] for q in queues]

    async def _depth_pipeline(self, queues: list[str]) -> list[int]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for q in queues:
                for key in self.keys.queue_lists(q):
                    pipe.llen(key)
            lengths = await pipe.execute()
        return [sum(lengths[3 * i : 3 * i + 3]) for i in range(len(queues))]

    async def _full_queues(self) -> list[str]:
        """Read the active queues and their limits (a paused queue is left out at once),
        and return those whose Redis lists hold REDIS_QUEUE_MAX_DEPTH jobs: not filled
        further."""
        bound = self.settings.redis_queue_max_depth
        self._queues = await self.limits.active_queues()
        stale = time.monotonic() - self._depth_checked_at > DEPTH_RECHECK
        if (
            stale
            or any(d >= bound for d in self._depth.values())
            or self._depth.keys() != {q.name for q in self._queues}
        ):
            names = [q.name for q in self._queues]
            self._depth = dict(zip(names, await self._read_depths(names), strict=True))
            self._depth_checked_at = time.monotonic()
        return sorted(q for q, d in self._depth.items() if d >= bound)

    async def _move_batch(self, queues: list[str]) -> dict[str, int]:
        """One batch of each of these (unlimited) queues; jobs moved per queue."""
        async with self.store.pool.acquire() as conn, conn.transaction():
            jobs = await self.store.move_due_jobs(
                conn,
                queues,
                self.settings.migrator_batch_size,
                idle_timeout=self.settings.move_idle_timeout,
            )
            if jobs:
                await self._push(jobs)
                if self.commit_delay:
                    await asyncio.sleep(self.commit_delay)
        # Committed: workers waiting on these rows can claim them now. The job hashes and
        # metrics are a cache, written after the commit so as not to hold the rows.
        return await self._moved(jobs)

    async def _move_limited(self, queue: str) -> tuple[int, float | None]:
        """Move what this limited queue may start now, under its row lock. Returns the
        jobs moved and, when due jobs are held back, seconds until it may move again."""
        batch = self.settings.migrator_batch_size
        wake: float | None = None
        async with self.store.pool.acquire() as conn, conn.transaction():
            limits = await self.limits.lock_queue(conn, queue)
            if limits is None:
                return 0, None
            usage = await self.limits.usage(conn, limits)
            if not usage.backlog:
                return 0, None
            allowed = budget(limits, usage, batch)
            paced = allowed
            if limits.rate_limit is not None:
                # Spread the starts over the period rather than in one burst: a burst
                # turns every delay between a worker's claim and its handler's start
                # into starts beyond the limit in some window.
                paced = min(allowed, self._pace(queue, limits.rate_limit, limits.rate_period))
                # No credit builds up while the window is what holds the queue back.
                self._credit[queue] = min(self._credit[queue], float(allowed))
            jobs = await self.limits.move(conn, limits, paced) if paced else []
            if jobs:
                await self._push(jobs)
            if limits.rate_limit is not None:
                self._credit[queue] -= len(jobs)
            if len(jobs) >= batch:
                wake = 0.0  # more may move at once
            elif (
                limits.rate_limit is not None
                and allowed - len(jobs) <= 0
                and (limits.rate_limit - usage.started - usage.waiting - len(jobs) <= 0)
            ):
                # Nothing may move before the oldest start leaves the window (jobs just
                # moved start soon: a period from now, about).
                frees_in = usage.frees_in if usage.frees_in is not None else limits.rate_period
                wake = max(frees_in, LIMIT_RECHECK_MIN)
            elif limits.rate_limit is not None and len(jobs) == paced < allowed:
                # The next step of the pace: when a job's worth of credit is earned.
                per_second = limits.rate_limit / limits.rate_period
                wake = max(RATE_TICK, (1 - self._credit[queue]) / per_second)
            else:
                wake = self._limit_recheck  # a slot frees when a job ends
        await self._moved(jobs)
        return len(jobs), wake

    def _pace(self, queue: str, rate_limit: int, rate_period: float) -> int:
        """Jobs this rate-limited queue may move now at its pace (credit earned since
        its last step)."""
        now = time.monotonic()
        per_second = rate_limit / rate_period
        last = self._paced_at.get(queue)
        cap = max(1.0, per_second * RATE_BURST)
        earned = cap if last is None else per_second * (now - last)
        self._paced_at[queue] = now
        self._credit[queue] = min(cap, self._credit.get(queue, 0.0) + earned)
        return math.floor(self._credit[queue] + 1e-9)

    async def _moved(self, jobs: list[MovedJob]) -> dict[str, int]:
        per_queue: dict[str, int] = defaultdict(int)
        for job in jobs:
            per_queue[job.queue_name] += 1
        if jobs:
            await self._after_move(jobs, per_queue)
            self.total_moved += len(jobs)
            log.debug("moved %d jobs to Redis", len(jobs))
        return per_queue

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

    async def _after_move(self, jobs: list[MovedJob], per_queue: dict[str, int]) -> None:
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
                    self.passes += 1
                    backoff.reset()
                except Exception as exc:
                    delay = backoff.next()
                    log.warning("migrator pass failed (%s); retrying in %.1fs", exc, delay)
                    await self._close_listener()
                    await wait_any(self._stop, timeout=delay)
                    continue
                if timeout > 0:
                    self.asleep.set()
                    await self._sleep(timeout, result.full_queues)
                    self.asleep.clear()
        finally:
            await self._close_listener()
            log.info("migrator stopped after moving %d jobs", self.total_moved)

    async def _sleep(self, timeout: float, full: list[str]) -> None:
        """Sleep until woken, stopped or `timeout`; while queues are full in Redis, look
        at their depths every FULL_QUEUE_RECHECK (Redis only: PostgreSQL is not asked
        again until one has room), and end the sleep when one has."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            step = min(left, FULL_QUEUE_RECHECK) if full else left
            await wait_any(self._wake, self._stop, timeout=step)
            if self._wake.is_set() or self._stop.is_set() or not full:
                return
            if not await self._still_full(full):
                return

    async def _still_full(self, queues: list[str]) -> bool:
        bound = self.settings.redis_queue_max_depth
        try:
            depths = await self._read_depths(queues)
        except Exception:
            return False  # let a pass meet the error and back off
        self._depth.update(zip(queues, depths, strict=True))
        return all(d >= bound for d in depths)

    async def _sleep_time(self, result: MoveResult) -> float:
        poll = self.settings.migrator_poll_interval
        if result.limit_wake is not None:
            poll = min(poll, result.limit_wake)
        seconds = await self.store.seconds_until_next_due()
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
