"""The producer paths the benchmark measures, found at run time.

The service has no producer module yet: one job goes through `JobStore.create_job`
(the path POST /jobs uses) and there is no bulk insert at all. When `app.producer`
appears with `enqueue(...)` / `enqueue_many(...)`, the benchmark uses them instead and
says so in its output. Recognised signatures (first parameter by name):

    async def enqueue(store | pool, job: NewJob) / (store | pool, queue_name, payload, ...)
    async def enqueue_many(store | pool, jobs: Sequence[NewJob])

Anything else falls back to the current path, with the reason in the output; adapt
`find_producer` when the real API lands.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from app.db.store import JobStore, NewJob

EnqueueOne = Callable[[NewJob], Awaitable[object]]
EnqueueMany = Callable[[Sequence[NewJob]], Awaitable[object]]

# Many jobs in one statement, mirroring app.db.store.INSERT_JOB (same columns, same
# defaults from the queue row): the stand-in while the service has no bulk insert.
INSERT_JOBS_UNNEST = """
INSERT INTO jobs (queue_name, payload, priority, run_at, max_attempts)
SELECT q.name, p.payload, COALESCE(p.priority, q.default_priority),
       COALESCE(p.run_at, now()), p.max_attempts
FROM unnest($2::jsonb[], $3::int[], $4::timestamptz[], $5::int[])
         AS p(payload, priority, run_at, max_attempts)
JOIN job_queues q ON q.name = $1
RETURNING id
"""


@dataclass(slots=True)
class Producer:
    one: EnqueueOne
    one_label: str
    many: EnqueueMany
    many_label: str


def _first_arg(func: Callable[..., Any], store: JobStore) -> object | None:
    params = list(inspect.signature(func).parameters.values())
    if not params:
        return None
    name = params[0].name
    if name in ("store", "job_store"):
        return store
    if name in ("pool", "db", "conn", "connection"):
        return store.pool
    return None


def find_producer(store: JobStore) -> Producer:
    one: EnqueueOne = store.create_job
    one_label = "JobStore.create_job (app.producer not found)"
    many_label = "local INSERT ... SELECT FROM unnest(...) (app.producer not found)"

    async def insert_many(jobs: Sequence[NewJob]) -> object:
        return await insert_jobs_unnest(store.pool, jobs)

    many: EnqueueMany = insert_many
    try:
        module = importlib.import_module("app.producer")
    except ImportError:
        return Producer(one, one_label, many, many_label)

    enqueue = getattr(module, "enqueue", None)
    one_label = "JobStore.create_job (app.producer.enqueue: signature not recognised)"
    if callable(enqueue):
        first = _first_arg(enqueue, store)
        params = list(inspect.signature(enqueue).parameters)
        if first is not None and len(params) >= 2:
            if params[1] == "queue_name":

                async def one_kw(job: NewJob) -> object:
                    return await enqueue(
                        first,
                        queue_name=job.queue_name,
                        payload=job.payload,
                        priority=job.priority,
                        run_at=job.run_at,
                        max_attempts=job.max_attempts,
                    )

                one, one_label = one_kw, "app.producer.enqueue"
            else:

                async def one_job(job: NewJob) -> object:
                    return await enqueue(first, job)

                one, one_label = one_job, "app.producer.enqueue"

    enqueue_many = getattr(module, "enqueue_many", None)
    many_label = "local INSERT ... SELECT FROM unnest(...) (app.producer.enqueue_many: not usable)"
    if callable(enqueue_many):
        first_many = _first_arg(enqueue_many, store)
        if first_many is not None:

            async def many_jobs(jobs: Sequence[NewJob]) -> object:
                return await enqueue_many(first_many, list(jobs))

            many, many_label = many_jobs, "app.producer.enqueue_many"
    return Producer(one, one_label, many, many_label)


async def insert_jobs_unnest(pool: asyncpg.Pool, jobs: Sequence[NewJob]) -> list[Any]:
    """One INSERT for jobs of one queue (the stand-in bulk path)."""
    if not jobs:
        return []
    queue = jobs[0].queue_name
    if any(j.queue_name != queue for j in jobs):
        raise ValueError("insert_jobs_unnest takes jobs of one queue")
    # The pool's jsonb codec encodes each element; encoding here first would make the
    # codec store JSON strings. Pass the dicts through.
    rows = await pool.fetch(
        INSERT_JOBS_UNNEST,
        queue,
        [j.payload for j in jobs],
        [j.priority for j in jobs],
        [j.run_at for j in jobs],
        [j.max_attempts for j in jobs],
    )
    return [r["id"] for r in rows]
