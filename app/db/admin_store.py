"""The operators' SQL: job creation with idempotency keys, dead letters, listings, queue
settings, counts and retention. Named statements, written once, on asyncpg.

Every state change is one conditional UPDATE (`WHERE id = $1 AND status = <expected>`)
that writes its job_logs row in the same statement (who did it, and why), so an operator
and a worker can never both win: whichever commits second finds the row changed.

Job inserts go through `insert_jobs`, which takes any "fetch" function: an asyncpg
connection's `fetch` for the API, or a SQLAlchemy connection for the producer library
(`app.producer`), so both run the same statements inside their caller's transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg

from app.db.store import _JOB_COLUMNS, CreatedJob, JobRow

Fetch = Callable[..., Awaitable[Sequence[Mapping[str, Any]]]]

# --- creating jobs --------------------------------------------------------------------

# A key older than the retention window is free again: unbind it from its old job.
RELEASE_EXPIRED_KEYS = """
UPDATE jobs SET idempotency_key = NULL
WHERE idempotency_key = ANY($1::text[])
  AND created_at < now() - make_interval(secs => $2::float8)
"""

# Payloads travel as JSON text so that any driver set-up (our pool's codecs or
# SQLAlchemy's) passes them the same way. A job for an unknown queue is not inserted, nor
# one whose idempotency key is taken: the caller tells the two apart.
INSERT_JOBS = """
INSERT INTO jobs (id, queue_name, payload, priority, run_at, max_attempts,
                  idempotency_key, request_hash)
SELECT i.id, q.name, i.payload::jsonb, COALESCE(i.priority, q.default_priority),
       COALESCE(i.run_at, now()), i.max_attempts, i.idempotency_key, i.request_hash
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::timestamptz[], $6::int[],
            $7::text[], $8::text[])
     WITH ORDINALITY AS i(id, queue_name, payload, priority, run_at, max_attempts,
                          idempotency_key, request_hash, n)
JOIN job_queues q ON q.name = i.queue_name
ORDER BY i.n
ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id, status, queue_name, priority, created_at
"""

# The same for one job, without the arrays: the common case of one producer call or one
# request, measurably cheaper to plan and run (bench: enqueue-one).
INSERT_ONE_JOB = """
INSERT INTO jobs (id, queue_name, payload, priority, run_at, max_attempts,
                  idempotency_key, request_hash)
SELECT $1::uuid, q.name, $3::text::jsonb, COALESCE($4::int, q.default_priority),
       COALESCE($5::timestamptz, now()), $6::int, $7::text, $8::text
FROM job_queues q WHERE q.name = $2::text
ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id, status, queue_name, priority, created_at
"""

FIND_JOBS_BY_KEYS = """
SELECT id, queue_name, priority, created_at, idempotency_key, request_hash
FROM jobs WHERE idempotency_key = ANY($1::text[])
"""


@dataclass(frozen=True, slots=True)
class JobToInsert:
    """A validated job request; `payload_json` is the payload as JSON text."""

    queue_name: str
    payload_json: str
    priority: int | None = None
    run_at: datetime | None = None
    max_attempts: int = 3
    idempotency_key: str | None = None
    request_hash: str | None = None


InsertOutcome = Literal["created", "existing", "key_conflict", "unknown_queue"]


@dataclass(frozen=True, slots=True)
class InsertResult:
    """What became of one requested job. `job` is set for created and existing; for an
    existing one (same key, same request) its status is reported as at creation."""

    outcome: InsertOutcome
    job: CreatedJob | None = None


async def insert_jobs(
    fetch: Fetch, jobs: Sequence[JobToInsert], *, key_ttl: float
) -> list[InsertResult]:
    """Insert jobs inside the caller's transaction; one result per job, in order.

    Same idempotency key and same request hash as an existing job: `existing` (that job).
    Same key, another request: `key_conflict`. The caller rolls back unless every result
    is acceptable to it.
    """
    ids = [uuid.uuid4() for _ in jobs]
    results: list[InsertResult | None] = [None] * len(jobs)
    first_with_key: dict[str, int] = {}
    to_insert: list[int] = []
    for i, job in enumerate(jobs):
        key = job.idempotency_key
        if key is not None and key in first_with_key:
            continue  # resolved against the first item with this key, below
        if key is not None:
            first_with_key[key] = i
        to_insert.append(i)

    keys = list(first_with_key)
    if keys:
        await fetch(RELEASE_EXPIRED_KEYS, keys, float(key_ttl))

    pending = to_insert
    for _attempt in range(3):
        if len(pending) == 1:
            (i,) = pending
            job = jobs[i]
            rows = await fetch(
                INSERT_ONE_JOB,
                ids[i],
                job.queue_name,
                job.payload_json,
                job.priority,
                job.run_at,
                job.max_attempts,
                job.idempotency_key,
                job.request_hash,
            )
        else:
            rows = await fetch(
                INSERT_JOBS,
                [ids[i] for i in pending],
                [jobs[i].queue_name for i in pending],
                [jobs[i].payload_json for i in pending],
                [jobs[i].priority for i in pending],
                [jobs[i].run_at for i in pending],
                [jobs[i].max_attempts for i in pending],
                [jobs[i].idempotency_key for i in pending],
                [jobs[i].request_hash for i in pending],
            )
        created = {r["id"]: r for r in rows}
        not_inserted: list[int] = []
        for i in pending:
            row = created.get(ids[i])
            if row is not None:
                results[i] = InsertResult("created", _created(row))
            elif jobs[i].idempotency_key is None:
                results[i] = InsertResult("unknown_queue")
            else:
                not_inserted.append(i)
        if not not_inserted:
            break
        found = {
            r["idempotency_key"]: r
            for r in await fetch(FIND_JOBS_BY_KEYS, [jobs[i].idempotency_key for i in not_inserted])
        }
        pending = []
        for i in not_inserted:
            existing = found.get(jobs[i].idempotency_key)
            if existing is None:
                pending.append(i)  # unknown queue, or the holder vanished: try again
            elif existing["request_hash"] == jobs[i].request_hash:
                results[i] = InsertResult("existing", _created(existing, status="queued"))
            else:
                results[i] = InsertResult("key_conflict")
        if not pending:
            break
    for i in pending:
        if results[i] is None:
            results[i] = InsertResult("unknown_queue")

    for i, job in enumerate(jobs):
        if results[i] is not None:
            continue
        assert job.idempotency_key is not None
        first = results[first_with_key[job.idempotency_key]]
        assert first is not None
        if first.job is None:
            results[i] = first
        elif jobs[first_with_key[job.idempotency_key]].request_hash == job.request_hash:
            results[i] = InsertResult("existing", first.job)
        else:
            results[i] = InsertResult("key_conflict")
    return [r for r in results if r is not None]


def _one_statement(jobs: Sequence[JobToInsert]) -> bool:
    """Without idempotency keys `insert_jobs` runs exactly one INSERT."""
    return all(job.idempotency_key is None for job in jobs)


def _created(row: Any, status: str | None = None) -> CreatedJob:
    return CreatedJob(
        id=row["id"],
        status=status or row["status"],
        queue_name=row["queue_name"],
        priority=row["priority"],
        created_at=row["created_at"],
    )


# --- operator actions -----------------------------------------------------------------
# Each is one statement: lock the row if it is in the expected state, change it, and log
# the change with the actor and the reason. attempt_number is the job's attempt count at
# the time of the action.

_LOG_ACTION = """
INSERT INTO job_logs (job_id, status, log_message, attempt_number, actor,
                      started_at, finished_at, duration)
SELECT id, $action, $reason, previous_attempts, $actor, now(), now(), interval '0'
FROM done
"""


def _action(update: str, action: str, reason: int, actor: int) -> str:
    log = (
        _LOG_ACTION.replace("$action", f"'{action}'")
        .replace("$reason", f"${reason}")
        .replace("$actor", f"${actor}")
    )
    return f"WITH {update}, logged AS ({log})\nSELECT * FROM done"


# failed -> queued with the attempts reset and errors cleared; history stays in job_logs.
_REPLAY_TARGET = """, done AS (
    UPDATE jobs j SET
        status = 'queued', attempt_count = 0, last_error_message = NULL, failed_at = NULL,
        run_at = now(), worker_id = NULL, lease_expires_at = NULL, updated_at = now()
    FROM target t
    WHERE j.id = t.id AND j.status = 'failed'
    RETURNING j.id, j.queue_name, j.status, j.attempt_count, t.attempt_count AS previous_attempts
)"""

REPLAY_JOB = _action(
    """
target AS (
    SELECT id, attempt_count FROM jobs WHERE id = $1 AND status = 'failed' FOR UPDATE
)"""
    + _REPLAY_TARGET,
    "replayed",
    reason=2,
    actor=3,
)

# Bulk replay: failed jobs of a queue (failed since $2, if given, and before $3, when the
# request began, so jobs failing meanwhile are not swept in), a bounded batch at a time.
REPLAY_DEAD_LETTERS = _action(
    """
target AS (
    SELECT id, attempt_count FROM jobs
    WHERE status = 'failed' AND queue_name = $1
      AND ($2::timestamptz IS NULL OR failed_at >= $2) AND failed_at <= $3
    ORDER BY failed_at
    LIMIT $4
    FOR UPDATE SKIP LOCKED
)"""
    + _REPLAY_TARGET,
    "replayed",
    reason=5,
    actor=6,
)

DISCARD_JOB = _action(
    """
target AS (
    SELECT id, attempt_count FROM jobs WHERE id = $1 AND status = 'failed' FOR UPDATE
), done AS (
    UPDATE jobs j SET status = 'discarded', updated_at = now()
    FROM target t
    WHERE j.id = t.id AND j.status = 'failed'
    RETURNING j.id, j.queue_name, j.status, j.attempt_count, t.attempt_count AS previous_attempts
)""",
    "discarded",
    reason=2,
    actor=3,
)

# A worker's claim (migrated_to_redis -> running) and a cancel lock the same row: the
# second to commit finds the status changed and does nothing.
CANCEL_JOB = _action(
    """
target AS (
    SELECT id, attempt_count FROM jobs
    WHERE id = $1 AND status IN ('queued', 'migrated_to_redis') FOR UPDATE
), done AS (
    UPDATE jobs j SET status = 'cancelled', lease_expires_at = NULL, updated_at = now()
    FROM target t
    WHERE j.id = t.id AND j.status IN ('queued', 'migrated_to_redis')
    RETURNING j.id, j.queue_name, j.status, j.attempt_count, t.attempt_count AS previous_attempts
)""",
    "cancelled",
    reason=2,
    actor=3,
)

JOB_STATUS = "SELECT status FROM jobs WHERE id = $1"

DATABASE_NOW = "SELECT clock_timestamp()"

# --- listings (newest first, keyset pagination on the sort key) -----------------------

LIST_DEAD_LETTERS = f"""
SELECT {_JOB_COLUMNS} FROM jobs
WHERE status = 'failed'
  AND ($1::text IS NULL OR queue_name = $1)
  AND ($2::timestamptz IS NULL OR failed_at >= $2)
  AND ($3::timestamptz IS NULL OR (failed_at, id) < ($3, $4::uuid))
ORDER BY failed_at DESC, id DESC
LIMIT $5
"""

LIST_JOBS = f"""
SELECT {_JOB_COLUMNS} FROM jobs
WHERE ($1::text IS NULL OR queue_name = $1)
  AND ($2::text IS NULL OR status = $2)
  AND ($3::timestamptz IS NULL OR created_at >= $3)
  AND ($4::timestamptz IS NULL OR created_at < $4)
  AND ($5::timestamptz IS NULL OR (created_at, id) < ($5, $6::uuid))
ORDER BY created_at DESC, id DESC
LIMIT $7
"""

LIST_JOB_LOGS = """
SELECT id, job_id, status, log_message, attempt_number, worker_id, actor,
       started_at, finished_at, EXTRACT(EPOCH FROM duration)::float8 AS duration_seconds,
       created_at
FROM job_logs
WHERE job_id = $1
  AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3::uuid))
ORDER BY created_at, id
LIMIT $4
"""

JOB_EXISTS = "SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1)"

# --- queues -----------------------------------------------------------------------------

_QUEUE_COLUMNS = "name, default_priority, is_active, created"

LIST_QUEUES = f"""
SELECT {_QUEUE_COLUMNS} FROM job_queues
WHERE ($1::text IS NULL OR name > $1)
ORDER BY name
LIMIT $2
"""

GET_QUEUE = f"SELECT {_QUEUE_COLUMNS} FROM job_queues WHERE name = $1"

CREATE_QUEUE = f"""
INSERT INTO job_queues (name, default_priority, is_active)
VALUES ($1, COALESCE($2::int, 100), COALESCE($3::bool, true))
ON CONFLICT (name) DO NOTHING
RETURNING {_QUEUE_COLUMNS}
"""

UPDATE_QUEUE = f"""
UPDATE job_queues SET
    default_priority = COALESCE($2::int, default_priority),
    is_active = COALESCE($3::bool, is_active)
WHERE name = $1
RETURNING {_QUEUE_COLUMNS}
"""

# Seconds since the oldest job of each queue that is due and not started: queued with
# run_at passed (idx_jobs_queue_migration), or waiting in Redis (the hot window: bounded
# by REDIS_QUEUE_MAX_DEPTH per queue).
OLDEST_DUE_AGES = """
SELECT q.name,
       EXTRACT(EPOCH FROM now() - LEAST(
           (SELECT j.run_at FROM jobs j
            WHERE j.queue_name = q.name AND j.status = 'queued' AND j.run_at <= now()
            ORDER BY j.run_at LIMIT 1),
           (SELECT min(j.run_at) FROM jobs j
            WHERE j.queue_name = q.name AND j.status = 'migrated_to_redis')
       ))::float8 AS age
FROM unnest($1::text[]) AS q(name)
"""

# --- counts ---------------------------------------------------------------------------

# Exact counts; run under a statement timeout (a count of a huge table is slow).
COUNT_JOBS = """
SELECT queue_name, status, count(*) AS n FROM jobs
WHERE ($1::text[] IS NULL OR queue_name = ANY($1::text[]))
GROUP BY queue_name, status
"""

# The planner's estimate of jobs by status (as of the last ANALYZE): instant at any size.
ESTIMATE_JOBS_BY_STATUS = """
SELECT s.status, round(s.freq * greatest(c.reltuples, 0))::bigint AS n
FROM pg_class c
JOIN pg_stats ps ON ps.schemaname = current_schema() AND ps.tablename = 'jobs'
                AND ps.attname = 'status'
CROSS JOIN LATERAL unnest(ps.most_common_vals::text::text[], ps.most_common_freqs)
     AS s(status, freq)
WHERE c.oid = 'jobs'::regclass
"""

SET_LOCAL_STATEMENT_TIMEOUT = "SELECT set_config('statement_timeout', $1, true)"

# --- retention ------------------------------------------------------------------------

# A bounded batch of terminal jobs whose last change (updated_at: when they became
# terminal) is older than the cut-off; their job_logs go with them (ON DELETE CASCADE).
# Served by idx_jobs_status_timestamps (status, updated_at, queue_name).
DELETE_OLD_JOBS = """
DELETE FROM jobs WHERE id IN (
    SELECT id FROM jobs
    WHERE status = ANY($1::text[])
      AND updated_at < now() - make_interval(secs => $2::float8)
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
"""


# --- domain objects -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ActionResult:
    """A won operator action: the job's new state."""

    id: uuid.UUID
    queue_name: str
    status: str
    attempt_count: int


@dataclass(frozen=True, slots=True)
class ActionRefused:
    """The action did not apply: no such job (status None), or it is in `status`."""

    status: str | None


@dataclass(frozen=True, slots=True)
class JobLogRow:
    id: uuid.UUID
    job_id: uuid.UUID
    status: str
    log_message: str | None
    attempt_number: int
    worker_id: str | None
    actor: str | None
    started_at: datetime
    finished_at: datetime | None
    duration_seconds: float | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class QueueRow:
    name: str
    default_priority: int
    is_active: bool
    created: datetime


@dataclass(frozen=True, slots=True)
class JobCounts:
    """Jobs by queue and status; `exact` False means the count timed out and
    `by_status` holds the planner's estimates (by_queue is then empty)."""

    by_queue: dict[str, dict[str, int]]
    by_status: dict[str, int]
    exact: bool


def _action_result(row: Any) -> ActionResult:
    return ActionResult(
        id=row["id"],
        queue_name=row["queue_name"],
        status=row["status"],
        attempt_count=row["attempt_count"],
    )


class AdminStore:
    """Named statements for the operators' endpoints and maintenance, over a pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # --- creating -----------------------------------------------------------------

    async def insert_each(
        self, jobs: Sequence[JobToInsert], *, key_ttl: float
    ) -> list[InsertResult]:
        """Insert independent jobs in one statement and one commit (group commit): each
        is created, found (idempotency key) or refused, whatever the others are."""
        async with self.pool.acquire() as conn:
            if _one_statement(jobs):  # atomic alone: no BEGIN and COMMIT round trips
                return await insert_jobs(conn.fetch, jobs, key_ttl=key_ttl)
            async with conn.transaction():
                return await insert_jobs(conn.fetch, jobs, key_ttl=key_ttl)

    async def insert_jobs(
        self, jobs: Sequence[JobToInsert], *, key_ttl: float
    ) -> list[InsertResult]:
        """Insert in one transaction; rolled back unless every job was created or found."""
        async with self.pool.acquire() as conn:
            if len(jobs) == 1 and _one_statement(jobs):
                # One job, one statement: it commits whole or not at all on its own.
                return await insert_jobs(conn.fetch, jobs, key_ttl=key_ttl)
            tx = conn.transaction()
            await tx.start()
            try:
                results = await insert_jobs(conn.fetch, jobs, key_ttl=key_ttl)
            except BaseException:
                await tx.rollback()
                raise
            if all(r.outcome in ("created", "existing") for r in results):
                await tx.commit()
            else:
                await tx.rollback()
            return results

    # --- operator actions -----------------------------------------------------------

    async def _act(
        self, statement: str, job_id: uuid.UUID, reason: str, actor: str
    ) -> ActionResult | ActionRefused:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(statement, job_id, reason, actor)
            if row is not None:
                return _action_result(row)
            return ActionRefused(await conn.fetchval(JOB_STATUS, job_id))

    async def replay(
        self, job_id: uuid.UUID, *, reason: str, actor: str
    ) -> ActionResult | ActionRefused:
        """failed -> queued with attempts reset and errors cleared (history kept)."""
        return await self._act(REPLAY_JOB, job_id, reason, actor)

    async def discard(
        self, job_id: uuid.UUID, *, reason: str, actor: str
    ) -> ActionResult | ActionRefused:
        """failed -> discarded (the row and its logs stay until retention)."""
        return await self._act(DISCARD_JOB, job_id, reason, actor)

    async def cancel(
        self, job_id: uuid.UUID, *, reason: str, actor: str
    ) -> ActionResult | ActionRefused:
        """queued | migrated_to_redis -> cancelled."""
        return await self._act(CANCEL_JOB, job_id, reason, actor)

    async def replay_dead_letters_batch(
        self,
        queue_name: str,
        failed_since: datetime | None,
        failed_until: datetime,
        limit: int,
        *,
        reason: str,
        actor: str,
    ) -> list[ActionResult]:
        """Replay up to `limit` failed jobs of a queue in one transaction."""
        rows = await self.pool.fetch(
            REPLAY_DEAD_LETTERS, queue_name, failed_since, failed_until, limit, reason, actor
        )
        return [_action_result(r) for r in rows]

    # --- listings -------------------------------------------------------------------

    async def list_dead_letters(
        self,
        *,
        queue_name: str | None,
        failed_since: datetime | None,
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[JobRow]:
        rows = await self.pool.fetch(
            LIST_DEAD_LETTERS,
            queue_name,
            failed_since,
            after[0] if after else None,
            after[1] if after else None,
            limit,
        )
        return [JobRow(**dict(r)) for r in rows]

    async def list_jobs(
        self,
        *,
        queue_name: str | None,
        status: str | None,
        created_from: datetime | None,
        created_to: datetime | None,
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[JobRow]:
        rows = await self.pool.fetch(
            LIST_JOBS,
            queue_name,
            status,
            created_from,
            created_to,
            after[0] if after else None,
            after[1] if after else None,
            limit,
        )
        return [JobRow(**dict(r)) for r in rows]

    async def list_job_logs(
        self, job_id: uuid.UUID, *, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[JobLogRow] | None:
        """The job's log rows, oldest first; None if there is no such job."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                LIST_JOB_LOGS,
                job_id,
                after[0] if after else None,
                after[1] if after else None,
                limit,
            )
            if not rows and not await conn.fetchval(JOB_EXISTS, job_id):
                return None
        return [JobLogRow(**dict(r)) for r in rows]

    # --- queues ---------------------------------------------------------------------

    async def list_queues(self, *, after: str | None, limit: int) -> list[QueueRow]:
        return [QueueRow(**dict(r)) for r in await self.pool.fetch(LIST_QUEUES, after, limit)]

    async def get_queue(self, name: str) -> QueueRow | None:
        row = await self.pool.fetchrow(GET_QUEUE, name)
        return QueueRow(**dict(row)) if row is not None else None

    async def create_queue(
        self, name: str, default_priority: int | None, is_active: bool | None
    ) -> QueueRow | None:
        """None when a queue of this name exists."""
        row = await self.pool.fetchrow(CREATE_QUEUE, name, default_priority, is_active)
        return QueueRow(**dict(row)) if row is not None else None

    async def update_queue(
        self, name: str, default_priority: int | None, is_active: bool | None
    ) -> QueueRow | None:
        """None when there is no such queue."""
        row = await self.pool.fetchrow(UPDATE_QUEUE, name, default_priority, is_active)
        return QueueRow(**dict(row)) if row is not None else None

    async def oldest_due_ages(self, names: Sequence[str]) -> dict[str, float | None]:
        rows = await self.pool.fetch(OLDEST_DUE_AGES, list(names))
        return {r["name"]: r["age"] for r in rows}

    # --- counts ---------------------------------------------------------------------

    async def count_jobs(
        self, *, timeout: float, queue_names: Sequence[str] | None = None
    ) -> JobCounts:
        """Exact counts by queue and status, or the planner's estimates by status if the
        count takes longer than `timeout` seconds."""
        async with self.pool.acquire() as conn:
            try:
                async with conn.transaction():
                    await conn.execute(
                        SET_LOCAL_STATEMENT_TIMEOUT, f"{max(1, int(timeout * 1000))}"
                    )
                    rows = await conn.fetch(
                        COUNT_JOBS, list(queue_names) if queue_names is not None else None
                    )
            except asyncpg.QueryCanceledError:
                estimates = await conn.fetch(ESTIMATE_JOBS_BY_STATUS)
                return JobCounts(
                    by_queue={},
                    by_status={r["status"]: int(r["n"]) for r in estimates},
                    exact=False,
                )
        by_queue: dict[str, dict[str, int]] = {}
        by_status: dict[str, int] = {}
        for r in rows:
            by_queue.setdefault(r["queue_name"], {})[r["status"]] = int(r["n"])
            by_status[r["status"]] = by_status.get(r["status"], 0) + int(r["n"])
        return JobCounts(by_queue=by_queue, by_status=by_status, exact=True)

    # --- retention ------------------------------------------------------------------

    async def delete_old_jobs(self, statuses: Sequence[str], older_than: float, limit: int) -> int:
        """Delete one bounded batch; returns how many jobs went."""
        result = await self.pool.execute(DELETE_OLD_JOBS, list(statuses), older_than, limit)
        return int(result.split()[-1])

    async def database_now(self) -> datetime:
        """PostgreSQL's clock (the one failed_at and created_at are written with)."""
        now: datetime = await self.pool.fetchval(DATABASE_NOW)
        return now
