"""The migrator on real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import orjson

from app.runtime import Runtime
from app.settings import Settings
from tests.support.factories import add_queue, create_job, job_status, wait_for


async def list_ids(rt: Runtime, key: str) -> list[str]:
    """Ids in a Redis list in the order a worker pops them (from the right)."""
    raw = await rt.redis.lrange(key, 0, -1)
    return [orjson.loads(r)["id"] for r in reversed(raw)]


async def test_moves_due_jobs_to_the_list_their_priority_routes_to(runtime: Runtime) -> None:
    rt = runtime
    await add_queue(rt, "t-mail")
    high = await create_job(rt, "t-mail", {"n": 1}, priority=10)
    normal = await create_job(rt, "t-mail", {"n": 2}, priority=100)
    low = await create_job(rt, "t-mail", {"n": 3}, priority=500)

    result = await rt.migrator().move_due_jobs()

    assert result.moved == 3
    assert await list_ids(rt, rt.keys.route("t-mail", 10)) == [str(high)]
    assert await list_ids(rt, rt.keys.route("t-mail", 100)) == [str(normal)]
    assert await list_ids(rt, rt.keys.route("t-mail", 500)) == [str(low)]
    for job_id in (high, normal, low):
        assert await job_status(rt, job_id) == "migrated_to_redis"
    # The message carries the seed's RedisJobPayload fields.
    message = orjson.loads((await rt.redis.lrange(rt.keys.route("t-mail", 10), 0, -1))[0])
    assert set(message) == {
        "id",
        "queue_name",
        "priority",
        "payload",
        "created_at",
        "attempt_count",
        "max_attempts",
    }
    assert message["payload"] == {"n": 1}
    assert message["queue_name"] == "t-mail"
    # The job hash says where it is.
    assert (await rt.redis.hget(rt.keys.job(str(high)), "status")) == b"migrated_to_redis"


async def test_moves_in_priority_then_creation_order(runtime: Runtime) -> None:
    rt = runtime
    await add_queue(rt, "t-order")
    ids = []
    for priority in (120, 60, 120, 60, 149):
        ids.append((priority, await create_job(rt, "t-order", priority=priority)))

    await rt.migrator().move_due_jobs()

    expected = [str(i) for _, i in sorted(ids, key=lambda p: p[0])]  # stable: creation order
    assert await list_ids(rt, rt.keys.route("t-order", 100)) == expected


async def test_batches_pick_the_most_urgent_jobs_first(
    runtime: Runtime, settings: Settings
) -> None:
    rt = runtime
    settings.migrator_batch_size = 3
    await add_queue(rt, "t-batch")
    urgent = [await create_job(rt, "t-batch", priority=200 - i) for i in range(3)]
    for _ in range(4):
        await create_job(rt, "t-batch", priority=900)
    migrator = rt.migrator()
    async with rt.pool.acquire() as conn, conn.transaction():
        first = await rt.store.move_due_jobs(conn, ["t-batch"], 3)
    assert {j.id for j in first} == set(urgent)
    # The loop goes on in batches until one comes back short.
    result = await migrator.move_due_jobs()
    assert result.moved == 4


async def test_future_jobs_and_paused_queues_stay_in_postgres(runtime: Runtime) -> None:
    rt = runtime
    await add_queue(rt, "t-later")
    await add_queue(rt, "t-paused", active=False)
    later = await create_job(rt, "t-later", run_at=datetime.now(UTC) + timedelta(hours=1))
    paused = await create_job(rt, "t-paused")

    result = await rt.migrator().move_due_jobs()

    assert result.moved == 0
    assert await job_status(rt, later) == "scheduled"
    assert await job_status(rt, paused) == "queued"
    assert await rt.redis.llen(rt.keys.route("t-paused", 100)) == 0


async def test_a_queue_full_in_redis_is_not_filled_further(
    runtime: Runtime, settings: Settings
) -> None:
    rt = runtime
    settings.redis_queue_max_depth = 5
    await add_queue(rt, "t-full")
    await add_queue(rt, "t-other")
    for _ in range(5):
        await create_job(rt, "t-full")
    result = await rt.migrator().move_due_jobs()
    assert result.moved == 5
    waiting = await create_job(rt, "t-full")
    other = await create_job(rt, "t-other")

    result = await rt.migrator().move_due_jobs()

    assert result.moved == 1
    assert result.full_queues == ["t-full"]
    assert await job_status(rt, waiting) == "queued"
    assert await job_status(rt, other) == "migrated_to_redis"


async def test_two_migrators_at_once_never_push_a_job_twice(
    runtime: Runtime, settings: Settings
) -> None:
    rt = runtime
    settings.migrator_batch_size = 50
    await add_queue(rt, "t-race")
    await rt.pool.execute(
        "INSERT INTO jobs (queue_name, payload, priority) "
        "SELECT 't-race', '{}'::jsonb, (g % 300) FROM generate_series(1, 2000) g"
    )
    a, b = rt.migrator(), rt.migrator()

    results = await asyncio.gather(*(m.move_due_jobs() for m in (a, b, rt.migrator())))

    pushed: list[str] = []
    for key in rt.keys.queue_lists("t-race"):
        pushed += await list_ids(rt, key)
    assert len(pushed) == 2000
    assert len(set(pushed)) == 2000
    assert sum(r.moved for r in results) == 2000
    assert (
        await rt.pool.fetchval("SELECT count(*) FROM jobs WHERE status = 'migrated_to_redis'")
        == 2000
    )


async def test_a_failed_push_leaves_the_batch_queued(runtime: Runtime) -> None:
    """Redis push and PostgreSQL update are one unit: the commit follows the push."""
    rt = runtime
    await add_queue(rt, "t-push")
    job = await create_job(rt, "t-push")
    # A key of the wrong type makes LPUSH fail inside the pipeline.
    await rt.redis.set(rt.keys.route("t-push", 100), "not a list")
    migrator = rt.migrator()
    try:
        await migrator.move_due_jobs()
    except Exception:
        pass
    else:
        raise AssertionError("the push should have failed")
    assert await job_status(rt, job) == "queued"


async def test_wakes_on_notify_long_before_the_poll_interval(
    runtime: Runtime, settings: Settings
) -> None:
    rt = runtime
    settings.migrator_poll_interval = 60.0
    await add_queue(rt, "t-wake")
    migrator = rt.migrator()
    task = asyncio.create_task(migrator.run())
    try:
        # Let it reach its sleep: with nothing to do it waits for a notification.
        await asyncio.wait_for(migrator.asleep.wait(), 5)
        job = await create_job(rt, "t-wake")
        t0 = time.monotonic()
        await wait_for(
            lambda: _status_is(rt, job, "migrated_to_redis"), timeout=5, what="job migrated"
        )
        assert time.monotonic() - t0 < 5  # far below the 60 s poll interval
    finally:
        migrator.stop()
        await task


async def test_sleeps_until_the_next_run_at(runtime: Runtime, settings: Settings) -> None:
    rt = runtime
    settings.migrator_poll_interval = 60.0
    await add_queue(rt, "t-timer")
    run_at = datetime.now(UTC) + timedelta(seconds=1)
    job = await create_job(rt, "t-timer", run_at=run_at)
    migrator = rt.migrator()
    task = asyncio.create_task(migrator.run())
    try:
        await wait_for(lambda: _status_is(rt, job, "migrated_to_redis"), timeout=5, what="migrated")
        moved_at = datetime.now(UTC)
        assert moved_at >= run_at
        assert moved_at - run_at < timedelta(seconds=1)
    finally:
        migrator.stop()
        await task


async def _status_is(rt: Runtime, job: object, status: str) -> bool:
    return await job_status(rt, job) == status  # type: ignore[arg-type]
