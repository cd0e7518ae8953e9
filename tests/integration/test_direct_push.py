"""The direct path: JobClient.enqueue with Redis pushes a due job of an idle queue
itself, and hands everything else to the migrator; a crash between its commit and its
push still ends with the job run."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from app.db.direct import INSERT_DUE_JOB
from app.maintenance.reconcile import RedisReconciler
from app.producer import JobClient
from app.registry import HandlerRegistry, Job
from app.runtime import Runtime
from app.settings import Settings
from tests.support.factories import add_queue, create_job, job_status, run_until_settled, wait_for

QUEUE = "t-direct"


@pytest.fixture
async def client(runtime: Runtime, settings: Settings) -> AsyncIterator[JobClient]:
    async with await JobClient.connect(
        settings.database_url,
        redis_url=settings.redis_url,
        redis_prefix=settings.redis_prefix,
        redis_queue_max_depth=3,
    ) as c:
        yield c


async def list_ids(rt: Runtime, key: str) -> list[uuid.UUID]:
    return [uuid.UUID(orjson.loads(m)["id"]) for m in await rt.redis.lrange(key, 0, -1)]


async def test_a_due_job_of_an_idle_queue_is_pushed_by_its_producer(
    runtime: Runtime, client: JobClient, registry: HandlerRegistry
) -> None:
    rt = runtime
    ran: list[uuid.UUID] = []

    @registry.handler(QUEUE)
    async def work(job: Job) -> None:
        ran.append(job.id)

    await add_queue(rt, QUEUE)
    urgent = await client.enqueue(QUEUE, {"n": 1}, priority=10)
    assert await job_status(rt, urgent) == "migrated_to_redis"
    assert await list_ids(rt, rt.keys.route(QUEUE, 10)) == [urgent]
    state = await rt.redis.hgetall(rt.keys.job(str(urgent)))
    assert state[b"status"] == b"migrated_to_redis"
    assert await rt.redis.ttl(rt.keys.job(str(urgent))) > 0
    assert await rt.redis.hget(rt.keys.metric_counter("migrated"), QUEUE) == b"1"
    # The worker takes it without any migrator pass.
    await rt.worker(burst=True).run()
    assert ran == [urgent]
    assert await job_status(rt, urgent) == "completed"


async def test_jobs_go_through_the_migrator_when_they_would_overtake_or_wait(
    runtime: Runtime, client: JobClient
) -> None:
    rt = runtime
    await add_queue(rt, QUEUE)
    await add_queue(rt, "t-direct-paused", active=False)
    waiting = await create_job(rt, QUEUE)  # a due job already waits in PostgreSQL
    behind = await client.enqueue(QUEUE, {})
    paused = await client.enqueue("t-direct-paused", {})
    assert await job_status(rt, waiting) == "queued"
    assert await job_status(rt, behind) == "queued"  # not ahead of the waiting one
    assert await job_status(rt, paused) == "queued"
    await add_queue(rt, "t-direct-future")
    future = await client.enqueue(
        "t-direct-future", {}, run_at=datetime.now(UTC) + timedelta(hours=1)
    )
    assert await job_status(rt, future) == "queued"
    for queue in (QUEUE, "t-direct-paused", "t-direct-future"):
        for key in rt.keys.queue_lists(queue):
            assert await rt.redis.llen(key) == 0


async def test_a_queue_full_in_redis_is_left_to_the_migrator(
    runtime: Runtime, client: JobClient
) -> None:
    rt = runtime
    await add_queue(rt, QUEUE)
    pushed = [await client.enqueue(QUEUE, {"n": i}) for i in range(3)]  # the bound is 3
    refused = await client.enqueue(QUEUE, {"n": 3})
    assert [await job_status(rt, j) for j in pushed] == ["migrated_to_redis"] * 3
    assert await job_status(rt, refused) == "queued"
    assert sorted(await list_ids(rt, rt.keys.route(QUEUE, 100))) == sorted(pushed)


async def test_a_crash_between_the_commit_and_the_push_ends_with_the_job_run(
    runtime: Runtime, registry: HandlerRegistry, settings: Settings
) -> None:
    rt = runtime
    settings.stale_migrated_after = 0.2
    ran: list[uuid.UUID] = []

    @registry.handler(QUEUE)
    async def work(job: Job) -> None:
        ran.append(job.id)

    await add_queue(rt, QUEUE)
    reconciler = RedisReconciler(rt.recovery, rt.redis, rt.keys, rt.settings)
    await reconciler.recover_lost_data()  # the epoch marker is set: Redis did not restart
    # The producer committed the job as migrated_to_redis and died before its push.
    row = await rt.pool.fetchrow(INSERT_DUE_JOB, uuid.uuid4(), QUEUE, "{}", None, None, 3)
    assert row is not None and row["status"] == "migrated_to_redis"

    async def stale() -> bool:
        return len(await rt.recovery.stale_migrated(0.2, 10)) == 1

    await wait_for(stale, what="the job to be stale")
    assert await reconciler.run_once() == 1
    assert await job_status(rt, row["id"]) == "queued"
    await run_until_settled(rt)
    assert ran == [row["id"]]
