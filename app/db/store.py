"""The job store: every SQL statement of the hot paths, named, written once, on asyncpg.

Each method is one statement (one round trip) and returns plain domain objects. Every
status transition is a single conditional UPDATE (`WHERE ... AND status = <expected>`),
so two actors can never both win; outcomes are fenced by (worker_id, attempt_count).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

# A plain connection or one borrowed from a pool (a string: the proxy is generic only
# in the type stubs).
Connection: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename,
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to undo when a connection goes back to the pool. asyncpg's default reset
    sends `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` on every
    release: a round trip per acquire, a third of a single-job enqueue in the profile.
    Our statements leave no session state behind: settings are transaction-local
    (`set_config(..., true)`), LISTEN runs on dedicated connections, and there are no
    advisory locks, cursors or prepared statements of our own. An open transaction is
    still rolled back by asyncpg before this is called."""


async def create_pool(
    dsn: str, *, min_size: int = 2, max_size: int = 10, command_timeout: float = 10.0
) -> asyncpg.Pool:
    """A connection pool with JSON codecs; made once per process (in the lifespan)."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=command_timeout,
        timeout=command_timeout,
        init=_init_connection,
        reset=_keep_session,
    )
    assert pool is not None
    return pool


# --- domain objects -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobRow:
    """A job as PostgreSQL holds it."""

    id: uuid.UUID
    queue_name: str
    status: str
    priority: int
    payload: dict[str, Any]
    attempt_count: int
    max_attempts: int
    run_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    failed_at: datetime | None
    last_error_message: str | None
    worker_id: str | None
    lease_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class NewJob:
    """What a producer supplies; `priority=None` takes the queue's default priority."""

    queue_name: str
    payload: dict[str, Any]
    priority: int | None = None
    run_at: datetime | None = None
    max_attempts: int = 3


@dataclass(frozen=True, slots=True)
class CreatedJob:
    id: uuid.UUID
    status: str
    queue_name: str
    priority: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class MovedJob:
    """A job the migrator moved: where it goes and the message pushed there."""

    id: uuid.UUID
    queue_name: str
    priority: int
    attempt_count: int
    created_at: datetime
    message: str


@dataclass(frozen=True, slots=True)
class Claim:
    """A won claim: the fencing token is (worker_id, attempt)."""

    id: uuid.UUID
    attempt: int
    max_attempts: int
    started_at: datetime
    run_at: datetime | None = None  # when the job was due (for the wait-time metric)


@dataclass(frozen=True, slots=True)
class Success:
    job_id: uuid.UUID
    attempt: int
    started_at: datetime
    finished_at: datetime
    queue_name: str = ""  # for metrics only


@dataclass(frozen=True, slots=True)
class Failure:
    job_id: uuid.UUID
    attempt: int
    started_at: datetime
    finished_at: datetime
    error: str
    retry_delay: float
    queue_name: str = ""  # for metrics only


@dataclass(frozen=True, slots=True)
class FailureResult:
    job_id: uuid.UUID
    status: str  # "queued" (a retry is scheduled) or "failed" (attempts exhausted)
    run_at: datetime


# --- statements -----------------------------------------------------------------------

_JOB_COLUMNS = (
    "id, queue_name, status, priority, payload, attempt_count, max_attempts, run_at, "
    "started_at, completed_at, failed_at, last_error_message, worker_id, lease_expires_at, "
    "created_at, updated_at"
)

INSERT_JOB = """
INSERT INTO jobs (queue_name, payload, priority, run_at, max_attempts)
SELECT q.name, $2::jsonb, COALESCE($3::int, q.default_priority),
       COALESCE($4::timestamptz, now()), $5::int
FROM job_queues q WHERE q.name = $1
RETURNING id, status, queue_name, priority, created_at
"""

GET_JOB = f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = $1"

ENSURE_QUEUES = """
INSERT INTO job_queues (name) SELECT unnest($1::text[]) ON CONFLICT (name) DO NOTHING
"""

ACTIVE_QUEUES = "SELECT name FROM job_queues WHERE is_active ORDER BY name"

# One statement locks a batch of due jobs (skipping rows another migrator holds), marks
# them migrated and builds the Redis message. The caller pushes, then commits: a crash
# before the commit leaves the jobs queued (a pushed copy is then dropped by the claim).
# The move commits asynchronously too: lost in a crash, the jobs are queued again in
# PostgreSQL while their copies sit in Redis, and those copies are dropped by the claim
# (it needs migrated_to_redis); the next pass moves the jobs again.
MOVE_DUE_JOBS = """
WITH async_commit AS (
    SELECT set_config('synchronous_commit', 'off', true)
), due AS (
    SELECT j.id
    FROM jobs j, async_commit
    WHERE j.status = 'queued'
      AND j.run_at <= now()
      AND j.queue_name <> ALL($2::text[])
      AND j.queue_name IN (SELECT name FROM job_queues WHERE is_active)
    ORDER BY j.priority, j.created_at
    LIMIT $1
    FOR UPDATE OF j SKIP LOCKED
)
UPDATE jobs SET status = 'migrated_to_redis', updated_at = now()
FROM due
WHERE jobs.id = due.id
RETURNING jobs.id, jobs.queue_name, jobs.priority, jobs.attempt_count, jobs.created_at,
    json_build_object(
        'id', jobs.id,
        'queue_name', jobs.queue_name,
        'priority', jobs.priority,
        'payload', jobs.payload,
        'created_at', jobs.created_at,
        'attempt_count', jobs.attempt_count,
        'max_attempts', jobs.max_attempts
    )::text AS message
"""

# Seconds until the next queued job of these queues is due (<= 0: one is due now).
# ORDER BY run_at LIMIT 1 rather than min(run_at): with the queue filter, min() would
# read every queued row; this walks idx_jobs_queuer in run_at order and stops at the
# first job of an active queue.
SECONDS_UNTIL_NEXT_DUE = """
SELECT EXTRACT(EPOCH FROM (run_at - now()))::float8
FROM jobs
WHERE status = 'queued' AND queue_name <> ALL($1::text[])
  AND queue_name IN (SELECT name FROM job_queues WHERE is_active)
ORDER BY run_at
LIMIT 1
"""

# The migrator pushes before it commits, so a worker can pop a copy while the job still
# reads `queued`. Locking the rows by id first waits for that commit and reads the status
# it wrote; a status test in the UPDATE's own WHERE would see the old row and lose the
# claim, leaving the job migrated_to_redis with no copy left. Ids are locked in order, so
# two workers holding copies of the same jobs cannot deadlock.
# A claim commits asynchronously (synchronous_commit off for its own transaction): if
# PostgreSQL crashes before the WAL is flushed, the claim is lost, the job is back to
# migrated_to_redis with no copy in Redis, and reconciliation queues it again: at least
# once still holds, and the claim saves a WAL flush on the path to the handler.
CLAIM_JOBS = """
WITH async_commit AS (
    SELECT set_config('synchronous_commit', 'off', true)
), locked AS (
    SELECT id, status FROM jobs, async_commit
    WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE OF jobs
)
UPDATE jobs SET
    status = 'running',
    worker_id = $2,
    attempt_count = jobs.attempt_count + 1,
    started_at = now(),
    lease_expires_at = now() + make_interval(secs => $3),
    updated_at = now()
FROM locked
WHERE jobs.id = locked.id AND locked.status = 'migrated_to_redis'
RETURNING jobs.id, jobs.attempt_count, jobs.max_attempts, jobs.started_at, jobs.run_at
"""

RENEW_LEASES = """
UPDATE jobs SET lease_expires_at = now() + make_interval(secs => $3)
WHERE id = ANY($1::uuid[]) AND status = 'running' AND worker_id = $2
RETURNING id
"""

# Completion and its job_logs row in one statement: both happen only while the fence
# (status running, same worker, same attempt) holds.
COMPLETE_JOBS = """
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::timestamptz[])
        AS t(id, attempt, started, finished)
), done AS (
    UPDATE jobs j SET
        status = 'completed',
        completed_at = i.finished,
        last_error_message = NULL,
        lease_expires_at = NULL,
        updated_at = now()
    FROM input i
    WHERE j.id = i.id AND j.status = 'running' AND j.worker_id = $5
      AND j.attempt_count = i.attempt
    RETURNING j.id, i.attempt, i.started, i.finished
)
INSERT INTO job_logs (job_id, status, log_message, attempt_number, worker_id,
                      started_at, finished_at, duration)
SELECT id, 'completed', NULL, attempt, $5, started, finished, finished - started FROM done
RETURNING job_id
"""

FAIL_JOBS = """
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::timestamptz[],
                         $5::text[], $6::float8[])
        AS t(id, attempt, started, finished, error, delay)
), done AS (
    UPDATE jobs j SET
        status = CASE WHEN j.attempt_count >= j.max_attempts THEN 'failed' ELSE 'queued' END,
        run_at = CASE WHEN j.attempt_count >= j.max_attempts THEN j.run_at
                      ELSE now() + make_interval(secs => i.delay) END,
        failed_at = CASE WHEN j.attempt_count >= j.max_attempts THEN now() END,
        last_error_message = i.error,
        lease_expires_at = NULL,
        updated_at = now()
    FROM input i
    WHERE j.id = i.id AND j.status = 'running' AND j.worker_id = $7
      AND j.attempt_count = i.attempt
    RETURNING j.id, j.status, j.run_at, i.attempt, i.started, i.finished, i.error
), logged AS (
    INSERT INTO job_logs (job_id, status, log_message, attempt_number, worker_id,
                          started_at, finished_at, duration)
    SELECT id, 'failed',
           error || CASE WHEN status = 'failed' THEN ' (attempts exhausted)'
                         ELSE ' (retry at ' || run_at::text || ')' END,
           attempt, $7, started, finished, finished - started
    FROM done
)
SELECT id, status, run_at FROM done
"""

# Shutdown hands back a job it could not finish: queued again, the attempt not spent.
RELEASE_JOBS = """
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::int[], $3::timestamptz[]) AS t(id, attempt, started)
), released AS (
    UPDATE jobs j SET
        status = 'queued',
        attempt_count = j.attempt_count - 1,
        run_at = now(),
        lease_expires_at = NULL,
        updated_at = now()
    FROM input i
    WHERE j.id = i.id AND j.status = 'running' AND j.worker_id = $4
      AND j.attempt_count = i.attempt
    RETURNING j.id, i.attempt, i.started
)
INSERT INTO job_logs (job_id, status, log_message, attempt_number, worker_id,
                      started_at, finished_at, duration)
SELECT id, 'interrupted', 'worker shut down before the job finished; handed back',
       attempt, $4, started, now(), now() - started
FROM released
RETURNING job_id
"""


# Running jobs whose lease expired (their worker died or stalled): each is a failed
# attempt with its own job_logs row, then retried by run_at or failed, as usual. The
# retry delay of attempt n is $3[n] (computed by app.backoff; the last entry repeats).
RESCUE_EXPIRED_LEASES = """
WITH expired AS (
    SELECT id FROM jobs
    WHERE status = 'running' AND lease_expires_at < now()
    ORDER BY lease_expires_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), done AS (
    UPDATE jobs j SET
        status = CASE WHEN j.attempt_count >= j.max_attempts THEN 'failed' ELSE 'queued' END,
        run_at = CASE WHEN j.attempt_count >= j.max_attempts THEN j.run_at
                      ELSE now() + make_interval(secs =>
                          ($2::float8[])[LEAST(j.attempt_count, cardinality($2::float8[]))])
                 END,
        failed_at = CASE WHEN j.attempt_count >= j.max_attempts THEN now() END,
        last_error_message =
            'lease expired: worker ' || coalesce(j.worker_id, '?') || ' stopped responding',
        lease_expires_at = NULL,
        updated_at = now()
    FROM expired e
    WHERE j.id = e.id AND j.status = 'running' AND j.lease_expires_at < now()
    RETURNING j.id, j.status, j.attempt_count, j.worker_id, j.started_at, j.run_at,
              j.last_error_message
), logged AS (
    INSERT INTO job_logs (job_id, status, log_message, attempt_number, worker_id,
                          started_at, finished_at, duration)
    SELECT id, 'failed',
           last_error_message || CASE WHEN status = 'failed' THEN ' (attempts exhausted)'
                                      ELSE ' (retry at ' || run_at::text || ')' END,
           attempt_count, worker_id, started_at, now(), now() - started_at
    FROM done
)
SELECT id, status, attempt_count, last_error_message FROM done
"""

# Redis lost its data: every job it held goes back to queued; the migrator (woken by
# the NOTIFY trigger) pushes them again at once.
REQUEUE_ALL_MIGRATED = """
UPDATE jobs SET status = 'queued', updated_at = now()
WHERE status = 'migrated_to_redis'
RETURNING id
"""

# Jobs migrated long ago: candidates for "popped but never claimed". The message is
# rebuilt exactly as the migrator built it, so the caller can look for it with LPOS.
STALE_MIGRATED = """
SELECT id, queue_name, priority, updated_at,
    json_build_object(
        'id', id,
        'queue_name', queue_name,
        'priority', priority,
        'payload', payload,
        'created_at', created_at,
        'attempt_count', attempt_count,
        'max_attempts', max_attempts
    )::text AS message
FROM jobs
WHERE status = 'migrated_to_redis' AND updated_at < now() - make_interval(secs => $1)
ORDER BY updated_at
LIMIT $2
"""

REQUEUE_MIGRATED = """
UPDATE jobs SET status = 'queued', updated_at = now()
FROM unnest($1::uuid[], $2::timestamptz[]) AS t(id, seen_updated_at)
WHERE jobs.id = t.id AND jobs.status = 'migrated_to_redis'
  AND jobs.updated_at = t.seen_updated_at
RETURNING jobs.id
"""


@dataclass(frozen=True, slots=True)
class StaleMigrated:
    id: uuid.UUID
    queue_name: str
    priority: int
    updated_at: datetime
    message: str


@dataclass(frozen=True, slots=True)
class RescuedJob:
    id: uuid.UUID
    status: str  # queued (retry scheduled) or failed
    attempt: int
    error: str


class JobStore:
    """Named statements over an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def create_job(self, job: NewJob) -> CreatedJob | None:
        """Insert a queued job; None when the queue does not exist (nothing is written)."""
        row = await self.pool.fetchrow(
            INSERT_JOB, job.queue_name, job.payload, job.priority, job.run_at, job.max_attempts
        )
        if row is None:
            return None
        return CreatedJob(
            id=row["id"],
            status=row["status"],
            queue_name=row["queue_name"],
            priority=row["priority"],
            created_at=row["created_at"],
        )

    async def get_job(self, job_id: uuid.UUID) -> JobRow | None:
        row = await self.pool.fetchrow(GET_JOB, job_id)
        return JobRow(**dict(row)) if row is not None else None

    async def ensure_queues(self, names: Sequence[str]) -> None:
        """Create job_queues rows for these names where missing."""
        if names:
            await self.pool.execute(ENSURE_QUEUES, list(names))

    async def active_queues(self) -> list[str]:
        return [r["name"] for r in await self.pool.fetch(ACTIVE_QUEUES)]

    @staticmethod
    async def move_due_jobs(
        conn: Connection, limit: int, excluded: Sequence[str] = ()
    ) -> list[MovedJob]:
        """Lock and mark up to `limit` due jobs of active queues not in `excluded` (those
        full in Redis), inside the caller's open transaction."""
        rows = await conn.fetch(MOVE_DUE_JOBS, limit, list(excluded))
        return [
            MovedJob(
                id=r["id"],
                queue_name=r["queue_name"],
                priority=r["priority"],
                attempt_count=r["attempt_count"],
                created_at=r["created_at"],
                message=r["message"],
            )
            for r in rows
        ]

    async def seconds_until_next_due(self, excluded: Sequence[str]) -> float | None:
        """Seconds until the next queued job of an active queue (not in `excluded`) is
        due; None if there is none."""
        value = await self.pool.fetchval(SECONDS_UNTIL_NEXT_DUE, list(excluded))
        return None if value is None else float(value)

    async def claim(
        self, job_ids: Sequence[uuid.UUID], worker_id: str, lease_seconds: float
    ) -> list[Claim]:
        """migrated_to_redis -> running for these ids; only the won claims are returned."""
        rows = await self.pool.fetch(CLAIM_JOBS, list(job_ids), worker_id, lease_seconds)
        return [
            Claim(
                id=r["id"],
                attempt=r["attempt_count"],
                max_attempts=r["max_attempts"],
                started_at=r["started_at"],
                run_at=r["run_at"],
            )
            for r in rows
        ]

    async def renew_leases(
        self, job_ids: Sequence[uuid.UUID], worker_id: str, lease_seconds: float
    ) -> set[uuid.UUID]:
        """Extend the leases this worker still holds; returns the ids it still holds."""
        rows = await self.pool.fetch(RENEW_LEASES, list(job_ids), worker_id, lease_seconds)
        return {r["id"] for r in rows}

    async def complete(self, worker_id: str, done: Sequence[Success]) -> set[uuid.UUID]:
        """Record successes whose fence still holds; returns the ids that applied."""
        if not done:
            return set()
        rows = await self.pool.fetch(
            COMPLETE_JOBS,
            [d.job_id for d in done],
            [d.attempt for d in done],
            [d.started_at for d in done],
            [d.finished_at for d in done],
            worker_id,
        )
        return {r["job_id"] for r in rows}

    async def fail(self, worker_id: str, failed: Sequence[Failure]) -> list[FailureResult]:
        """Record failed attempts whose fence holds: retry later via run_at, or fail."""
        if not failed:
            return []
        rows = await self.pool.fetch(
            FAIL_JOBS,
            [f.job_id for f in failed],
            [f.attempt for f in failed],
            [f.started_at for f in failed],
            [f.finished_at for f in failed],
            [f.error for f in failed],
            [f.retry_delay for f in failed],
            worker_id,
        )
        return [FailureResult(job_id=r["id"], status=r["status"], run_at=r["run_at"]) for r in rows]

    async def release(
        self, worker_id: str, jobs: Sequence[tuple[uuid.UUID, int, datetime]]
    ) -> set[uuid.UUID]:
        """Hand back running jobs (id, attempt, started) without spending their attempt."""
        if not jobs:
            return set()
        rows = await self.pool.fetch(
            RELEASE_JOBS,
            [j[0] for j in jobs],
            [j[1] for j in jobs],
            [j[2] for j in jobs],
            worker_id,
        )
        return {r["job_id"] for r in rows}

    async def rescue_expired_leases(
        self, limit: int, retry_delays: Sequence[float]
    ) -> list[RescuedJob]:
        """Fail the attempts of running jobs whose lease expired; retry or fail them."""
        rows = await self.pool.fetch(RESCUE_EXPIRED_LEASES, limit, list(retry_delays))
        return [
            RescuedJob(
                id=r["id"],
                status=r["status"],
                attempt=r["attempt_count"],
                error=r["last_error_message"],
            )
            for r in rows
        ]

    async def requeue_all_migrated(self) -> int:
        """migrated_to_redis -> queued for every job (Redis lost its data)."""
        return len(await self.pool.fetch(REQUEUE_ALL_MIGRATED))

    async def stale_migrated(self, older_than: float, limit: int) -> list[StaleMigrated]:
        rows = await self.pool.fetch(STALE_MIGRATED, older_than, limit)
        return [StaleMigrated(**dict(r)) for r in rows]

    async def requeue_migrated(self, jobs: Sequence[StaleMigrated]) -> set[uuid.UUID]:
        """Queue these again unless they moved on since they were read."""
        if not jobs:
            return set()
        rows = await self.pool.fetch(
            REQUEUE_MIGRATED, [j.id for j in jobs], [j.updated_at for j in jobs]
        )
        return {r["id"] for r in rows}
