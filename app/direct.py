"""The direct path: a job that is due now goes to Redis from the process that created it,
right after its own commit, instead of waiting for the migrator to be woken, read it
and move it (NOTIFY, then a transaction of several round trips).

PostgreSQL stays the truth, and a crash at any instruction still ends with the job run:

1. Before the INSERT, the job's Redis message is recorded in its queue's in-flight set
   (the set a worker's pop writes, app.worker.fetch), scored by the Redis clock; by the
   same script, and only if the epoch marker is there (else the migrator's path).
2. The INSERT writes the job `migrated_to_redis` at once, but only if its queue is
   active with no limits, the job is due, its priority is the one assumed for the
   message's list, and no job of its queue waits `queued` (a job never overtakes the
   migrator's backlog); otherwise it is `queued` (or `scheduled`) as before, and the
   migrator moves it.
3. After the commit, one script per queue removes each in-flight entry and pushes its
   message, then sets the queue's wake-up marker.
   The entries of jobs that were not written `migrated_to_redis` are removed. This runs
   in a task of its own, so the caller does not wait for it: the pushes of inserts
   that commit meanwhile go in the same round trip.

A crash between 1 and 3, or a failed push, leaves the entry: once it is older than
VISIBILITY_TIMEOUT the in-flight recovery pushes the message (app.maintenance.inflight),
and the claim decides, as for any copy: a job that was never committed, or committed
`queued`, is not `migrated_to_redis`, so its copy is dropped. The INSERT is bounded by
half the visibility timeout, so a copy cannot be pushed back (and dropped) before the
row it stands for is committed.

An insert that starts less than BUSY_GAP after this process's previous insert ended
takes the migrator's path: a stream of inserts (a producer enqueueing one job after
another, or the API's batches under load) is moved in batches by the migrator for less
than the record's round trip per insert, and its jobs would not start much sooner. The
pushes of the previous insert leave during its INSERT. An insert after an idle moment
takes the direct path, which saves an idle job the migrator's wake-up.

A queue whose Redis lists hold REDIS_QUEUE_MAX_DEPTH jobs, one not known yet, a job
with an idempotency key that finds an existing job, and an insert of more jobs than
MIGRATOR_BATCH_SIZE (a bulk load, which the migrator moves more cheaply) take the
migrator's path; so does, for MISS_BACKOFF, a queue whose last try failed (a job
written `queued` behind a backlog, or no epoch marker), without recording first.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

import asyncpg
import orjson
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from app.job_state import JobStateCache
from app.jobs.model import InsertResult, JobToInsert
from app.keys import LEVEL_CODES, Keys, priority_level
from app.metrics import MetricsWriter
from app.redis_batch import Batch
from app.settings import Settings

log = logging.getLogger("hybridq.direct")

# Seconds a producer trusts what it read of job_queues (which queues may take the
# direct path, and their default priority). The INSERT checks the queue itself, so a
# stale view costs only a job that takes the migrator's path (or a removed entry).
QUEUE_INFO_TTL = 1.0
# Seconds a queue found full in Redis takes the migrator's path (which respects the bound).
FULL_BACKOFF = 1.0
# Seconds a queue takes the migrator's path after a job of it could not take the direct
# one for another reason: jobs of the queue wait `queued` (a backlog, which the migrator
# moves first), or Redis lost its data (no epoch marker until the reconciler's pass). An
# attempt that fails costs the insert a record round trip and the process a drop of the
# entry (and a wake-up of the migrator), so under a backlog each insert paid three round
# trips for one; short, so that the direct path comes back soon after the backlog goes.
MISS_BACKOFF = 0.1
# Seconds between the end of an insert and the start of the next below which the next
# takes the migrator's path (see the module's text): a producer that enqueues faster
# than one job a millisecond. bench: enqueue-one (the direct path's round trip before
# each INSERT cost it 40% of its rate) and latency (paced, on the direct path).
BUSY_GAP = 0.001

QUEUE_INFO = """
SELECT name, default_priority,
       is_active AND rate_limit IS NULL AND max_running IS NULL
           AND max_running_per_key IS NULL AS plain
FROM job_queues
"""

# KEYS[1]: a queue's in-flight set, KEYS[2]: the epoch marker that covers it. ARGV:
# members (level code + message). Records them at the Redis clock, as a worker's pop
# does, and returns how many; records nothing and returns -1 without the marker (Redis
# lost its data, and the reconciler has not requeued yet: the migrator's path until then).
RECORD_SCRIPT = """
if redis.call('EXISTS', KEYS[2]) == 0 then
    return -1
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, member in ipairs(ARGV) do
    redis.call('ZADD', KEYS[1], now, member)
end
return #ARGV
"""

# KEYS: high, normal, low, in-flight, marker of one queue. ARGV: members, oldest first.
# Each member's entry is removed and its message pushed; then the marker wakes an idle
# worker. Pushed even when the entry is gone: the recovery may have pushed it already (a
# harmless second copy, which the claim drops), or Redis may have lost it with its data.
# Returns the queue's depth in Redis.
PUSH_SCRIPT = """
local lists = {h = KEYS[1], n = KEYS[2], l = KEYS[3]}
for _, member in ipairs(ARGV) do
    redis.call('ZREM', KEYS[4], member)
    redis.call('LPUSH', lists[string.sub(member, 1, 1)] or KEYS[2], string.sub(member, 2))
end
redis.call('ZADD', KEYS[5], 0, '1')
return redis.call('LLEN', KEYS[1]) + redis.call('LLEN', KEYS[2]) + redis.call('LLEN', KEYS[3])
"""


@dataclass(frozen=True, slots=True)
class QueueInfo:
    default_priority: int
    plain: bool  # active, and no rate limit, concurrency limit or per-key limit


@dataclass(slots=True)
class DirectPlan:
    """The jobs of one insert that try the direct path: their ids, the priority each
    message was routed by (None: not tried), and their in-flight entries."""

    ids: list[uuid.UUID]
    priorities: list[int | None]
    created_at: datetime
    members: dict[int, tuple[str, bytes]]  # job index -> (queue, in-flight member)


def message_of(job_id: uuid.UUID, job: JobToInsert, priority: int, created_at: datetime) -> bytes:
    """The Redis message of a new job, with the fields of the migrator's (REDIS_MESSAGE)."""
    return b"".join(
        (
            b'{"id":"',
            str(job_id).encode(),
            b'","queue_name":',
            orjson.dumps(job.queue_name),
            b',"priority":',
            str(priority).encode(),
            b',"payload":',
            job.payload_json.encode(),
            b',"created_at":"',
            created_at.isoformat().encode(),
            b'","attempt_count":0,"max_attempts":',
            str(job.max_attempts).encode(),
            b"}",
        )
    )


class DirectPush:
    """Records, then pushes, the jobs of one process's inserts that are due now."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: aioredis.Redis,
        keys: Keys,
        *,
        max_depth: int,
        visibility_timeout: float,
        job_hash_ttl: int,
        max_jobs: int = 500,
    ) -> None:
        self.pool = pool
        # An insert of more jobs takes the migrator's path: it moves them in batches of
        # this size (MIGRATOR_BATCH_SIZE) for less than the producer's pushes would cost
        # it (bench: bulk enqueue), and they would not start sooner.
        self.max_jobs = max_jobs
        self.redis = redis
        self.keys = keys
        self.max_depth = max_depth
        # The bound of the INSERT after the entries are recorded (see the module's text).
        self.insert_timeout = visibility_timeout / 2
        self.state = JobStateCache(keys, job_hash_ttl)
        self.metrics = MetricsWriter(keys)
        self._queues: dict[str, QueueInfo] = {}
        self.queue_info_ttl = QUEUE_INFO_TTL
        self._queues_read_at = -QUEUE_INFO_TTL
        self._reading: asyncio.Task[None] | None = None
        self.miss_backoff = MISS_BACKOFF
        self._off_until: dict[str, float] = {}  # queue -> monotonic end of its backoff
        self._record = redis.register_script(RECORD_SCRIPT)
        self._push = redis.register_script(PUSH_SCRIPT)
        self.pushed = 0  # jobs pushed by this process (tests, bench)
        self._pushes: list[tuple[str, bytes, uuid.UUID]] = []
        self._drops: list[tuple[str, bytes]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.busy_gap = BUSY_GAP
        self._ended = float("-inf")  # monotonic end of this process's last insert

    @classmethod
    def of(cls, pool: asyncpg.Pool, redis: aioredis.Redis, keys: Keys, settings: Settings) -> Self:
        """With the service's settings (REDIS_QUEUE_MAX_DEPTH, VISIBILITY_TIMEOUT,
        JOB_HASH_TTL, MIGRATOR_BATCH_SIZE)."""
        return cls(
            pool,
            redis,
            keys,
            max_depth=settings.redis_queue_max_depth,
            visibility_timeout=settings.visibility_timeout,
            job_hash_ttl=settings.job_hash_ttl,
            max_jobs=settings.migrator_batch_size,
        )

    async def _queue_info(self) -> dict[str, QueueInfo]:
        if time.monotonic() - self._queues_read_at >= self.queue_info_ttl:
            if self._reading is None or self._reading.done():
                self._reading = asyncio.create_task(self._read_queues())
            await asyncio.shield(self._reading)
        return self._queues

    async def _read_queues(self) -> None:
        rows = await self.pool.fetch(QUEUE_INFO)
        self._queues = {r["name"]: QueueInfo(r["default_priority"], r["plain"]) for r in rows}
        self._queues_read_at = time.monotonic()

    async def plan(self, jobs: Sequence[JobToInsert], ids: list[uuid.UUID]) -> DirectPlan | None:
        """Record the in-flight entries of the jobs that may take the direct path; None
        when none may (or Redis could not record them: the migrator's path then)."""
        if len(jobs) > self.max_jobs or time.monotonic() - self._ended < self.busy_gap:
            # A bulk load, or a stream of inserts (see the module's text).
            return None
        try:
            queues = await self._queue_info()
        except Exception as exc:
            log.warning("direct push off for this insert: could not read queues (%s)", exc)
            return None
        now = datetime.now(UTC)
        mono = time.monotonic()
        priorities: list[int | None] = [None] * len(jobs)
        members: dict[int, tuple[str, bytes]] = {}
        by_queue: dict[str, list[bytes]] = defaultdict(list)
        for i, job in enumerate(jobs):
            info = queues.get(job.queue_name)
            if (
                info is None
                or not info.plain
                or (job.run_at is not None and job.run_at > now)
                or self._off_until.get(job.queue_name, 0.0) > mono
            ):
                continue
            priority = info.default_priority if job.priority is None else job.priority
            level = LEVEL_CODES[priority_level(priority)].encode()
            member = level + message_of(ids[i], job, priority, now)
            priorities[i] = priority
            members[i] = (job.queue_name, member)
            by_queue[job.queue_name].append(member)
        if not members:
            return None
        try:
            recorded = await self._send(by_queue, [], [])
        except Exception as exc:
            log.warning("direct push off for this insert: could not record it (%s)", exc)
            return None
        for i, (queue, _member) in list(members.items()):
            if queue not in recorded:
                del members[i]
                priorities[i] = None
        if not members:
            return None
        return DirectPlan(ids=ids, priorities=priorities, created_at=now, members=members)

    def after_commit(self, plan: DirectPlan, results: Sequence[InsertResult] | None) -> None:
        """Note the pushes of the jobs written `migrated_to_redis` and the drops of the
        other entries, for `push_soon` to send. `results` None: nothing was committed.
        What a failed push leaves is recovered (see above)."""
        pushed: list[tuple[str, bytes, uuid.UUID]] = []
        dropped: list[tuple[str, bytes]] = []
        missed: set[str] = set()
        for i, (queue, member) in plan.members.items():
            created = (
                results[i].job if results is not None and results[i].outcome == "created" else None
            )
            if created is not None and created.status == "migrated_to_redis":
                pushed.append((queue, member, created.id))
            else:
                dropped.append((queue, member))
                if created is not None:  # written queued: a backlog (or a pause not seen yet)
                    missed.add(queue)
        self._back_off(missed, self.miss_backoff)
        self._pushes.extend(pushed)
        self._drops.extend(dropped)

    def insert_ended(self) -> None:
        """Called at the end of every insert of this process, on either path, once its
        connection is back in the pool: the start of the BUSY_GAP, and `push_soon`."""
        self._ended = time.monotonic()
        self.push_soon()

    def push_soon(self) -> None:
        """Send what `after_commit` noted, in a task of its own: the caller does not wait
        for it (its jobs are committed), and they leave as soon as it awaits anything."""
        if (self._pushes or self._drops) and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.create_task(self._flush(), name="direct-push")
            self._flusher.add_done_callback(_log_crash)

    async def flushed(self) -> None:
        """Send what waits and wait until every push noted so far has been tried (tests;
        close)."""
        self.push_soon()
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    def _take(self) -> tuple[list[tuple[str, bytes, uuid.UUID]], list[tuple[str, bytes]]]:
        pushes, self._pushes = self._pushes, []
        drops, self._drops = self._drops, []
        return pushes, drops

    async def _flush(self) -> None:
        """Push what is waiting, in one round trip, until nothing is: the pushes of
        inserts that commit meanwhile share the next one."""
        while self._pushes or self._drops:
            pushes, drops = self._take()
            try:
                await self._send({}, pushes, drops)
            except Exception as exc:
                log.warning(
                    "direct push of %d jobs failed (%s); the in-flight recovery pushes "
                    "them within VISIBILITY_TIMEOUT",
                    len(pushes),
                    exc,
                )

    async def _send(
        self,
        records: dict[str, list[bytes]],
        pushes: list[tuple[str, bytes, uuid.UUID]],
        drops: list[tuple[str, bytes]],
    ) -> set[str]:
        """One round trip: record these entries, push these jobs, drop these entries,
        and write the job hashes and counter the migrator would write (a cache). Returns
        the queues whose entries were recorded and whose epoch marker holds (raises when
        a record failed); a failed push is logged (the recovery pushes)."""
        by_queue: dict[str, list[bytes]] = defaultdict(list)
        for queue, member, _id in pushes:
            by_queue[queue].append(member)
        for attempt in range(2):
            async with self.redis.pipeline(transaction=False) as pipe:
                batch = Batch(pipe)
                for q, members in records.items():
                    self._script(
                        pipe, self._record, [self.keys.inflight(q), self._marker(q)], members
                    )
                for q, members in by_queue.items():
                    self._script(pipe, self._push, list(self.keys.script_keys(q)), members)
                    self.metrics.count(batch, "migrated", q, len(members))
                for q, member in drops:
                    pipe.zrem(self.keys.inflight(q), member)
                for _q, _m, job_id in pushes:
                    self.state.migrated(batch, job_id, 0)
                batch.flush()
                replies = await pipe.execute(raise_on_error=False)
            if attempt == 0 and any(isinstance(r, NoScriptError) for r in replies):
                # Redis does not know the scripts (first use, or a restart): load them
                # and send again (each step is idempotent but the counter).
                await self.redis.script_load(RECORD_SCRIPT)
                await self.redis.script_load(PUSH_SCRIPT)
                continue
            break
        recorded = replies[: len(records)]
        depths = replies[len(records) : len(records) + len(by_queue)]
        rest = replies[len(records) + len(by_queue) :]
        failed = [r for r in (*depths, *rest) if isinstance(r, Exception)]
        if failed:
            log.warning(
                "direct push of %d jobs failed (%s); the in-flight recovery pushes them "
                "within VISIBILITY_TIMEOUT",
                len(pushes),
                failed[0],
            )
        else:
            self.pushed += len(pushes)
        self._back_off(
            {
                q
                for q, depth in zip(by_queue, depths, strict=True)
                if not isinstance(depth, Exception) and int(depth) >= self.max_depth
            },
            FULL_BACKOFF,
        )
        errors = [r for r in recorded if isinstance(r, Exception)]
        if errors:
            raise errors[0]
        lost = {q for q, n in zip(records, recorded, strict=True) if int(n) < 0}
        self._back_off(lost, self.miss_backoff)
        return set(records) - lost

    def _back_off(self, queues: set[str], seconds: float) -> None:
        """These queues' jobs take the migrator's path for `seconds` (a queue full in
        Redis: FULL_BACKOFF; a miss: `miss_backoff`), without shortening a longer
        backoff."""
        until = time.monotonic() + seconds
        for q in queues:
            self._off_until[q] = max(self._off_until.get(q, 0.0), until)

    def _script(self, pipe: Any, script: Any, keys: list[str], args: list[bytes]) -> None:
        """Queue a script call: by its SHA (loaded on NOSCRIPT, see `_send`), or whole
        on a Redis Cluster, whose pipelines refuse EVALSHA."""
        if self.keys.cluster:
            pipe.eval(script.script, len(keys), *keys, *args)
        else:
            pipe.evalsha(script.sha, len(keys), *keys, *args)

    def _marker(self, queue: str) -> str:
        """The epoch marker whose absence means Redis lost this queue's data: on a Redis
        Cluster the queue's own, in the slot of its keys."""
        return self.keys.queue_epoch(queue) if self.keys.cluster else self.keys.epoch_marker()


def _log_crash(task: asyncio.Task[None]) -> None:
    """The flusher catches every error of a push; anything else is a bug, logged (its
    jobs are recovered, and the next insert starts a new flusher)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("the direct-push task ended unexpectedly", exc_info=task.exception())
