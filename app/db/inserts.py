"""Creating jobs: one INSERT for any number of jobs, idempotency keys, and the
group-commit variant in which each job stands or falls on its own.

`insert_jobs` takes any "fetch" function: an asyncpg connection's `fetch` for the API
and JobClient, or a SQLAlchemy connection for the producer library (`app.producer`), so
every door runs the same statements inside its caller's transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson
from asyncpg.pgproto.pgproto import UUID as DriverUUID

from app.db.pool import Connection
from app.db.rows import NewJob
from app.jobs.model import CreatedJob, InsertResult, JobToInsert

if TYPE_CHECKING:
    from app.direct import DirectPlan, DirectPush

log = logging.getLogger("hybridq.inserts")

Fetch = Callable[..., Awaitable[Sequence[Mapping[str, Any]]]]

# Jobs per INSERT when a large batch is inserted while it is prepared (insert_chunks).
PIPELINE_CHUNK = 1000

# A key older than the retention window is free again: unbind it from its old job.
RELEASE_EXPIRED_KEYS = """
UPDATE jobs SET idempotency_key = NULL
WHERE idempotency_key = ANY($1::text[])
  AND created_at < now() - make_interval(secs => $2::float8)
"""

# The status of a new job `i` of queue `q`: migrated_to_redis on the direct path (see
# below), else queued. One text for INSERT_JOBS and INSERT_ONE_JOB.
_DIRECT_STATUS = """CASE WHEN i.assumed IS NOT NULL AND q.is_active AND q.rate_limit IS NULL
                 AND q.max_running IS NULL AND q.max_running_per_key IS NULL
                 AND COALESCE(i.run_at, now()) <= now()
                 AND COALESCE(i.priority, q.default_priority) = i.assumed
                 AND NOT EXISTS (SELECT 1 FROM jobs b
                                 WHERE b.queue_name = q.name AND b.status = 'queued')
            THEN 'migrated_to_redis' ELSE 'queued' END"""

# Payloads travel as JSON text so that any driver set-up (our pool's codecs or
# SQLAlchemy's) passes them the same way. A job for an unknown queue is not inserted: the
# caller sees it missing from what is returned. The queue row is locked FOR KEY SHARE, as
# a foreign key would lock it for every job (migration 0011): a queue deleted meanwhile
# waits for the insert, or the insert for it and finds no queue.
# The direct path (app.direct): a job whose $10 (the priority its Redis message was
# routed by) is given is written migrated_to_redis if its queue is active with no limits,
# it is due, that priority is its own, and no job of its queue waits queued for the
# migrator (one probe of idx_jobs_queue_due: a job never overtakes that backlog, as when
# the queue was full in Redis); any other job is queued (or scheduled, by the trigger of
# migration 0009). $11: created_at of the jobs (NULL: now()); given only on
# the direct path, whose INSERT then does not wake the migrator (migration 0010): its
# caller does, if some jobs were written queued or scheduled (`wake_if_needed`).
_INSERT_JOBS_SELECT = f"""
INSERT INTO jobs (id, queue_name, payload, priority, run_at, max_attempts,
                  idempotency_key, request_hash, concurrency_key, status, created_at)
SELECT i.id, q.name, i.payload::jsonb, COALESCE(i.priority, q.default_priority),
       COALESCE(i.run_at, now()), i.max_attempts, i.idempotency_key, i.request_hash,
       i.concurrency_key,
       {_DIRECT_STATUS},
       COALESCE($11::timestamptz, now())
FROM (SELECT set_config('hybridq.direct', CASE WHEN $11::timestamptz IS NULL
                                                  THEN 'off' ELSE 'on' END, true)) AS direct,
     unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::timestamptz[], $6::int[],
            $7::text[], $8::text[], $9::text[], $10::int[])
     WITH ORDINALITY AS i(id, queue_name, payload, priority, run_at, max_attempts,
                          idempotency_key, request_hash, concurrency_key, assumed, n)
JOIN job_queues q ON q.name = i.queue_name
ORDER BY i.n
FOR KEY SHARE OF q
"""
_RETURNING = "RETURNING id, status, queue_name, priority, created_at\n"

# Jobs without idempotency keys. No ON CONFLICT clause: it would cost every row a
# speculative insertion (and one more WAL record) even where it has no key to conflict
# on, a quarter of a 10,000-job INSERT.
INSERT_JOBS = _INSERT_JOBS_SELECT + _RETURNING

# Jobs of which some have an idempotency key: one whose key is taken is not inserted,
# and the caller tells it from an unknown queue by looking the key up.
INSERT_KEYED_JOBS = (
    _INSERT_JOBS_SELECT
    + "ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING\n"
    + _RETURNING
)

# One job without an idempotency key, without the arrays: the common case of one
# producer call or one request, measurably cheaper to plan and run (bench: enqueue-one).
# $7: its concurrency key, $8 and $9: $10 and $11 of INSERT_JOBS.
INSERT_ONE_JOB = f"""
INSERT INTO jobs (id, queue_name, payload, priority, run_at, max_attempts,
                  concurrency_key, status, created_at)
SELECT i.id, q.name, i.payload::jsonb, COALESCE(i.priority, q.default_priority),
       COALESCE(i.run_at, now()), i.max_attempts, i.concurrency_key,
       {_DIRECT_STATUS},
       COALESCE($9::timestamptz, now())
FROM (SELECT set_config('hybridq.direct', CASE WHEN $9::timestamptz IS NULL
                                                  THEN 'off' ELSE 'on' END, true)) AS direct,
     (SELECT $1::uuid AS id, $2::text AS queue_name, $3::text AS payload, $4::int AS priority,
             $5::timestamptz AS run_at, $6::int AS max_attempts, $7::text AS concurrency_key,
             $8::int AS assumed) AS i
JOIN job_queues q ON q.name = i.queue_name
FOR KEY SHARE OF q
RETURNING id, status, queue_name, priority, created_at
"""

# The direct path's INSERT leaves the migrator asleep: woken here when it has work.
WAKE_MIGRATOR = "SELECT pg_notify('hybridq_jobs_queued', '')"

FIND_JOBS_BY_KEYS = """
SELECT id, queue_name, priority, created_at, idempotency_key, request_hash
FROM jobs WHERE idempotency_key = ANY($1::text[])
"""


async def insert_jobs(
    fetch: Fetch,
    jobs: Sequence[JobToInsert],
    *,
    key_ttl: float,
    plan: DirectPlan | None = None,
) -> list[InsertResult]:
    """Insert jobs inside the caller's transaction; one result per job, in order.

    Same idempotency key and same request hash as an existing job: `existing` (that job).
    Same key, another request: `key_conflict`. The caller rolls back unless every result
    is acceptable to it. With a `plan` (app.direct), its ids are used, and the jobs it
    tries are written migrated_to_redis where their queue allows.
    """
    # UUIDv7: time-ordered, so the primary key serves listings newest first.
    ids = plan.ids if plan is not None else new_ids(len(jobs))
    assumed: list[int | None] = plan.priorities if plan is not None else [None] * len(jobs)
    created_at = plan.created_at if plan is not None else None
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

    # Keyed rows in key order: two transactions inserting some of the same keys (two API
    # processes' group commits) then wait on each other in one order, never in a circle.
    to_insert.sort(key=lambda i: (jobs[i].idempotency_key is None, jobs[i].idempotency_key or ""))
    keys = list(first_with_key)
    if keys:
        await fetch(RELEASE_EXPIRED_KEYS, keys, float(key_ttl))

    pending = to_insert
    for _attempt in range(3):
        keyed = any(jobs[i].idempotency_key is not None for i in pending)
        if len(pending) == 1 and not keyed:
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
                job.concurrency_key,
                assumed[i],
                created_at,
            )
        else:
            rows = await fetch(
                INSERT_KEYED_JOBS if keyed else INSERT_JOBS,
                [ids[i] for i in pending],
                [jobs[i].queue_name for i in pending],
                [jobs[i].payload_json for i in pending],
                _column([jobs[i].priority for i in pending]),
                _column([jobs[i].run_at for i in pending]),
                [jobs[i].max_attempts for i in pending],
                _column([jobs[i].idempotency_key for i in pending]),
                _column([jobs[i].request_hash for i in pending]),
                _column([jobs[i].concurrency_key for i in pending]),
                _column([assumed[i] for i in pending]),
                created_at,
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


def new_ids(n: int) -> list[uuid.UUID]:
    """Ids for n new jobs (UUIDv7): uuid_utils makes them, as the driver's own UUID (a
    uuid.UUID, and the type it returns in rows), which it encodes without a conversion;
    a third of the cost of uuid_utils.compat's stdlib UUIDs."""
    # Imported here: a worker or migrator process, which inserts no job, never loads it.
    from uuid_utils import uuid7

    return [DriverUUID(uuid7().bytes) for _ in range(n)]


def _column(values: list[Any]) -> list[Any] | None:
    """An array argument of INSERT_JOBS, or NULL when every value is: the driver need not
    encode (and check) one element per job, and unnest() pads the missing array with
    NULLs to the length of the others."""
    return values if any(v is not None for v in values) else None


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


class InsertStore:
    """Job inserts over a pool: the API's group commit, its batches and JobClient. With
    `direct` (app.direct), a job due now is pushed to Redis right after its commit."""

    def __init__(self, pool: asyncpg.Pool, direct: DirectPush | None = None) -> None:
        self.pool = pool
        self.direct = direct

    async def create_job(self, job: NewJob) -> CreatedJob | None:
        """Insert one queued job (no idempotency key); None when the queue does not
        exist (nothing is written)."""
        row = JobToInsert(
            queue_name=job.queue_name,
            payload_json=orjson.dumps(job.payload).decode(),
            priority=job.priority,
            run_at=job.run_at,
            max_attempts=job.max_attempts,
            concurrency_key=job.concurrency_key,
        )
        (result,) = await self.insert_jobs([row], key_ttl=0)
        return result.job

    async def _plan(self, jobs: Sequence[JobToInsert]) -> DirectPlan | None:
        if self.direct is None:
            return None
        return await self.direct.plan(jobs, new_ids(len(jobs)))

    def _timeout(self, plan: DirectPlan | None) -> float | None:
        # Bounded once the entries are recorded: see app.direct.
        return self.direct.insert_timeout if plan is not None and self.direct else None

    async def insert_each(
        self, jobs: Sequence[JobToInsert], *, key_ttl: float
    ) -> list[InsertResult]:
        """Insert independent jobs in one statement and one commit (group commit): each
        is created, found (idempotency key) or refused, whatever the others are."""
        plan = await self._plan(jobs)
        try:
            async with self.pool.acquire() as conn:
                fetch = _bounded(conn, self._timeout(plan))
                if _one_statement(jobs):  # atomic alone: no BEGIN and COMMIT round trips
                    results = await insert_jobs(fetch, jobs, key_ttl=key_ttl, plan=plan)
                else:
                    async with conn.transaction():
                        results = await insert_jobs(fetch, jobs, key_ttl=key_ttl, plan=plan)
                # Committed. (An error above leaves the plan's entries to the in-flight
                # recovery: the commit may or may not have happened, the claim decides.)
                if plan is not None and self.direct is not None:
                    self.direct.after_commit(plan, results)
                await _wake_if_needed(conn, plan, results)
        finally:
            self._ended()
        return results

    async def insert_jobs(
        self, jobs: Sequence[JobToInsert], *, key_ttl: float
    ) -> list[InsertResult]:
        """Insert in one transaction; rolled back unless every job was created or found."""
        plan = await self._plan(jobs)
        try:
            async with self.pool.acquire() as conn:
                fetch = _bounded(conn, self._timeout(plan))
                if len(jobs) == 1 and _one_statement(jobs):
                    # One job, one statement: it commits whole or not at all on its own.
                    results = await insert_jobs(fetch, jobs, key_ttl=key_ttl, plan=plan)
                    committed: list[InsertResult] | None = results
                else:
                    results, committed = await _all_or_nothing(
                        conn, lambda: insert_jobs(fetch, jobs, key_ttl=key_ttl, plan=plan)
                    )
                if plan is not None and self.direct is not None:
                    self.direct.after_commit(plan, committed)
                if committed is not None:
                    await _wake_if_needed(conn, plan, committed)
        finally:
            self._ended()
        return results

    def _ended(self) -> None:
        # After the connection's release, whatever happened, on either path: see
        # DirectPush.insert_ended.
        if self.direct is not None:
            self.direct.insert_ended()

    def pipelines(self, count: int) -> bool:
        """Whether a batch of `count` jobs goes through `insert_chunks`: at least two
        chunks, and beyond the direct path's limit (which takes one statement)."""
        return count >= 2 * PIPELINE_CHUNK and (self.direct is None or count > self.direct.max_jobs)

    async def insert_chunks(
        self, chunks: Iterable[Sequence[JobToInsert]], *, key_ttl: float
    ) -> list[InsertResult]:
        """insert_jobs for a large batch made chunk by chunk (by the iterator, e.g.
        validation.prepare_in_chunks): the server inserts one chunk while this process
        makes the next, so the two sides work at once (a fifth off a 10,000-job call).
        One transaction, rolled back unless every job was created or found; an error
        raised by the iterator rolls it back too."""

        async def insert_all(conn: Connection) -> list[InsertResult]:
            results: list[InsertResult] = []
            inserting: asyncio.Task[list[InsertResult]] | None = None
            try:
                for chunk in chunks:  # made while the previous chunk is inserted
                    if inserting is not None:
                        results += await inserting
                    inserting = asyncio.create_task(insert_jobs(conn.fetch, chunk, key_ttl=key_ttl))
                    await asyncio.sleep(0)  # its statement leaves before the next chunk is made
                if inserting is not None:
                    results += await inserting
            finally:
                if inserting is not None:  # never hand the connection back mid-statement
                    with contextlib.suppress(Exception):
                        await inserting
            return results

        async with self.pool.acquire() as conn:
            results, _committed = await _all_or_nothing(conn, lambda: insert_all(conn))
        return results


async def _all_or_nothing(
    conn: Connection, insert: Callable[[], Awaitable[list[InsertResult]]]
) -> tuple[list[InsertResult], list[InsertResult] | None]:
    """Run the inserts in a transaction, committed (the results, twice) only if every
    job was created or found, else rolled back (the results and None)."""
    tx = conn.transaction()
    await tx.start()
    try:
        results = await insert()
    except BaseException:
        await tx.rollback()
        raise
    if all(r.outcome in ("created", "existing") for r in results):
        await tx.commit()
        return results, results
    await tx.rollback()
    return results, None


async def _wake_if_needed(
    conn: Connection, plan: DirectPlan | None, results: Sequence[InsertResult]
) -> None:
    """After a direct-path INSERT (which wakes no one): wake the migrator if it wrote
    jobs queued or scheduled, as the INSERT trigger would have."""
    if plan is not None and any(
        r.outcome == "created" and r.job is not None and r.job.status != "migrated_to_redis"
        for r in results
    ):
        try:
            await conn.execute(WAKE_MIGRATOR)
        except Exception as exc:  # the jobs are committed: the migrator's poll finds them
            log.warning("could not wake the migrator (%s); its next poll finds the jobs", exc)


def _bounded(conn: Connection, timeout: float | None) -> Fetch:
    """The connection's fetch, each call bounded by `timeout` seconds (None: the pool's)."""
    if timeout is None:
        return conn.fetch

    async def fetch(sql: str, *args: Any) -> Sequence[Mapping[str, Any]]:
        rows: Sequence[Mapping[str, Any]] = await conn.fetch(sql, *args, timeout=timeout)
        return rows

    return fetch
