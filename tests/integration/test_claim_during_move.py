"""A worker pops a job's copy while the migrator that pushed it has not committed yet
(the migrator pushes, then commits). The claim must wait for that commit and win, or the
job stays migrated_to_redis with no copy anywhere: lost."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import asyncpg
from asyncpg.transaction import Transaction

from app.db.hot import JobStore
from app.db.rows import Claim, NewJob
from app.runtime import Runtime
from tests.support.db import wait_for_a_lock_wait

QUEUE = "email-sending"


async def claim_waiting_on_the_move(
    runtime: Runtime, job_id: uuid.UUID, observer: asyncpg.Connection
) -> asyncio.Task[list[Claim]]:
    """Start a claim; return once it waits on the migrator's row locks."""
    claim = asyncio.create_task(runtime.store.claim([job_id], "worker-a", 30))
    waiting = asyncio.create_task(wait_for_a_lock_wait(observer))
    await asyncio.wait({claim, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if claim.done():
        waiting.cancel()
        raise AssertionError(f"the claim did not wait for the move to commit: {claim.result()}")
    await waiting
    return claim


@contextlib.asynccontextmanager
async def a_claim_during_a_move(
    runtime: Runtime, database_url: str
) -> AsyncIterator[tuple[Transaction, asyncio.Task[list[Claim]], uuid.UUID]]:
    """A job moved by a migrator whose transaction is still open, and a worker's claim
    of it, seen waiting on the move's row locks."""
    created = await runtime.inserts.create_job(NewJob(queue_name=QUEUE, payload={}))
    assert created is not None
    migrator = await asyncpg.connect(database_url)
    observer = await asyncpg.connect(database_url)
    try:
        move = migrator.transaction()
        await move.start()
        moved = await JobStore.move_due_jobs(migrator, [QUEUE], 10)
        assert [m.id for m in moved] == [created.id]
        claim = await claim_waiting_on_the_move(runtime, created.id, observer)
        yield move, claim, created.id
    finally:
        await migrator.close()
        await observer.close()


async def test_a_claim_during_the_move_waits_for_its_commit_and_wins(
    runtime: Runtime, database_url: str
) -> None:
    async with a_claim_during_a_move(runtime, database_url) as (move, claim, job_id):
        await move.commit()
        claims = await asyncio.wait_for(claim, 10)

    assert [(c.id, c.attempt) for c in claims] == [(job_id, 1)]
    job = await runtime.store.get_job(job_id)
    assert job is not None
    assert (job.status, job.worker_id, job.attempt_count) == ("running", "worker-a", 1)


async def test_a_claim_during_a_move_that_rolls_back_loses_and_the_job_stays_queued(
    runtime: Runtime, database_url: str
) -> None:
    async with a_claim_during_a_move(runtime, database_url) as (move, claim, job_id):
        await move.rollback()  # e.g. the Redis push failed
        claims = await asyncio.wait_for(claim, 10)

    assert claims == []  # the pushed copy is dropped, not run
    job = await runtime.store.get_job(job_id)
    assert job is not None
    assert (job.status, job.attempt_count) == ("queued", 0)  # the next move takes it
