"""Creating jobs over HTTP: validation (app.jobs.validation), one transaction, idempotency
keys, and the `created` counter. Single-job requests share a group commit."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

from app.api.jobs.created import CreatedCounter
from app.batcher import Batcher
from app.jobs.model import InsertResult, JobToInsert
from app.jobs.request import JobCreate
from app.jobs.validation import raise_for_refused
from app.metrics import MetricsWriter
from app.runtime import Runtime

log = logging.getLogger("hybridq.api")

# Rows of concurrent POST /jobs requests inserted by one statement and one commit.
GROUP_COMMIT_MAX = 1000
# How long the lifespan waits on shutdown for the group commit to answer what it holds.
GROUP_COMMIT_CLOSE_TIMEOUT = 10.0

GroupCommit = Batcher[JobToInsert, InsertResult]


def group_commit(rt: Runtime, counter: CreatedCounter | None = None) -> GroupCommit:
    """Concurrent POST /jobs requests share one INSERT and one commit: each row is
    created, found by its idempotency key, or refused on its own, whatever the others
    are; an idle API adds no delay, a busy one pays one WAL flush per batch. Created
    jobs are counted by `counter`, which never waits on Redis."""

    async def insert(rows: list[JobToInsert]) -> list[InsertResult]:
        return await rt.inserts.insert_each(rows, key_ttl=rt.settings.idempotency_key_ttl)

    async def count(_rows: list[JobToInsert], results: Sequence[object]) -> None:
        if counter is not None:
            counter.add(results)
        else:
            await count_created(rt, [r for r in results if isinstance(r, InsertResult)])

    return Batcher(insert, name="group-commit", max_items=GROUP_COMMIT_MAX, after_flush=count)


async def count_created(rt: Runtime, results: Sequence[InsertResult]) -> None:
    created: dict[str, int] = {}
    for r in results:
        if r.outcome == "created" and r.job is not None:
            created[r.job.queue_name] = created.get(r.job.queue_name, 0) + 1
    with contextlib.suppress(Exception):  # a metric never fails a committed request
        await MetricsWriter(rt.keys).count_now(rt.redis, "created", created.items())


async def create_jobs(
    rt: Runtime,
    jobs: Sequence[JobCreate],
    rows: Sequence[JobToInsert],
    *,
    locs: Sequence[Sequence[str | int]],
    key_fields: Sequence[str],
    group: GroupCommit | None = None,
    counter: CreatedCounter | None = None,
) -> list[InsertResult]:
    """Insert the prepared rows of validated jobs, all or nothing. A refused item (unknown
    queue, idempotency key reused with a different request) raises InputErrors naming
    each one. One row goes through the group commit when there is one."""
    if group is not None and len(rows) == 1:
        results = [await group.submit(rows[0])]  # counted by the group commit
    else:
        results = await rt.inserts.insert_jobs(rows, key_ttl=rt.settings.idempotency_key_ttl)
        if counter is not None:
            counter.add(results)  # written to Redis in the background
        else:
            await count_created(rt, results)
    raise_for_refused(jobs, results, locs=locs, key_fields=key_fields)
    return results
