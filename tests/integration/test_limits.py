"""Queue limits and blocked backlogs, in one process: the queue API's limit fields, the
concurrency_key of a job, the scheduled status, and what one migrator pass moves.
(tests/acceptance/test_limits.py runs the limits with real worker processes.)"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from app.db.rows import NewJob
from app.runtime import Runtime
from app.settings import Settings
from tests.integration.test_queues_api import queue_item
from tests.support.factories import add_queue, create_job, job_status, wait_for


async def test_queue_limits_are_set_shown_and_cleared_over_http(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    created = await client.post(
        "/queues", json={"name": "t-smtp", "rate_limit": 50, "rate_period": 1.0}
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["rate_limit"], body["rate_period"], body["max_running"]) == (50, 1.0, None)

    patched = await client.patch(
        "/queues/t-smtp", json={"max_running": 5, "max_running_per_key": 1}
    )
    assert patched.status_code == 200, patched.text
    # A field left out keeps its value; the others change.
    assert patched.json()["rate_limit"] == 50
    assert patched.json()["max_running_per_key"] == 1
    listed = await queue_item(client, "t-smtp")
    assert (listed["rate_limit"], listed["max_running"], listed["max_running_per_key"]) == (
        50,
        5,
        1,
    )

    cleared = await client.patch("/queues/t-smtp", json={"rate_limit": None})
    assert cleared.json()["rate_limit"] is None
    assert cleared.json()["max_running"] == 5


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/queues", {"name": "t-bad", "rate_limit": 0}, "rate_limit"),
        ("POST", "/queues", {"name": "t-bad", "rate_period": 0}, "rate_period"),
        ("POST", "/queues", {"name": "t-bad", "max_running": -1}, "max_running"),
        ("POST", "/queues", {"name": "t-bad", "max_running_per_key": "one"}, "max_running_per_key"),
        ("PATCH", "/queues/t-lim", {"rate_period": None}, "rate_period"),
        ("PATCH", "/queues/t-lim", {"max_running": 0}, "max_running"),
    ],
)
async def test_a_bad_limit_is_refused_naming_the_field(
    runtime: Runtime,
    client: httpx.AsyncClient,
    method: str,
    path: str,
    body: dict[str, object],
    field: str,
) -> None:
    await add_queue(runtime, "t-lim")
    response = await client.request(method, path, json=body)
    assert response.status_code == 422, response.text
    assert field in response.text
    assert await runtime.pool.fetchval("SELECT count(*) FROM job_queues WHERE name = 't-bad'") == 0


async def test_a_job_carries_its_concurrency_key(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    await add_queue(runtime, "t-keyed")
    created = await client.post(
        "/jobs",
        json={"queue_name": "t-keyed", "payload": {}, "concurrency_key": "mailbox-7"},
    )
    assert created.status_code == 201, created.text
    job = (await client.get(f"/jobs/{created.json()['job_id']}")).json()
    assert job["concurrency_key"] == "mailbox-7"

    batch = await client.post(
        "/jobs/batch",
        json={"jobs": [{"queue_name": "t-keyed", "payload": {}, "concurrency_key": "mb-8"}]},
    )
    assert batch.status_code == 201, batch.text
    bad = await client.post(
        "/jobs", json={"queue_name": "t-keyed", "payload": {}, "concurrency_key": ""}
    )
    assert bad.status_code == 422 and "concurrency_key" in bad.text


async def test_a_future_job_is_scheduled_promoted_when_due_and_cancellable(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    rt = runtime
    await add_queue(rt, "t-sched")
    later = await create_job(rt, "t-sched", run_at=datetime.now(UTC) + timedelta(hours=1))
    soon = await create_job(rt, "t-sched", run_at=datetime.now(UTC) + timedelta(hours=1))
    assert await job_status(rt, later) == "scheduled"
    answer = await client.post(
        "/jobs", json={"queue_name": "t-sched", "payload": {}, "run_at": "2100-01-01T00:00:00Z"}
    )
    assert answer.json()["status"] == "scheduled"

    cancelled = await client.post(f"/jobs/{later}/cancel", json={"reason": "not needed"})
    assert cancelled.status_code == 200, cancelled.text
    assert await job_status(rt, later) == "cancelled"

    # Its time comes: the next pass promotes it and moves it.
    await rt.pool.execute("UPDATE jobs SET run_at = now() WHERE id = $1", soon)
    assert await job_status(rt, soon) == "scheduled"
    result = await rt.migrator().move_due_jobs()
    assert result.moved == 1
    assert await job_status(rt, soon) == "migrated_to_redis"


async def test_max_running_moves_only_what_may_run(runtime: Runtime) -> None:
    rt = runtime
    await add_queue(rt, "t-max")
    await rt.queues.set_limits("t-max", max_running=2)
    jobs = [await create_job(rt, "t-max") for _ in range(5)]
    migrator = rt.migrator()

    first = await migrator.move_due_jobs()
    again = await migrator.move_due_jobs()

    assert (first.moved, again.moved) == (2, 0)
    assert first.limit_wake is not None  # it will look again, with nothing notifying it
    moved = [j for j in jobs if await job_status(rt, j) == "migrated_to_redis"]
    # One ends: one more may go.
    await rt.pool.execute("UPDATE jobs SET status = 'completed' WHERE id = $1", moved[0])
    assert (await migrator.move_due_jobs()).moved == 1


async def test_a_held_queue_is_looked_at_less_and_less_often_not_in_a_loop(
    runtime: Runtime,
) -> None:
    rt = runtime
    await add_queue(rt, "t-held")
    await rt.queues.set_limits("t-held", max_running=1)
    first, second = [await create_job(rt, "t-held") for _ in range(2)]
    migrator = rt.migrator()
    task = asyncio.create_task(migrator.run())
    try:

        async def first_moved() -> bool:
            return await job_status(rt, first) == "migrated_to_redis"

        await wait_for(first_moved, what="the first job to move")
        start = migrator.passes
        # Watch a second in which the slot stays taken (an observation window, not a wait
        # for a condition): a pass every 10 ms would make 100.
        await asyncio.sleep(1.0)
        held = migrator.passes - start
        assert held <= 25  # about 10: 10 ms, then 1.5 times longer each, up to 250 ms
        assert await job_status(rt, second) == "queued"
        # The slot frees (the job ends): the second moves within the longest recheck.
        await rt.pool.execute("UPDATE jobs SET status = 'completed' WHERE id = $1", first)

        async def second_moved() -> bool:
            return await job_status(rt, second) == "migrated_to_redis"

        await wait_for(second_moved, timeout=1.0, what="the second job to move")
    finally:
        migrator.stop()
        await task


async def test_a_per_key_limit_moves_one_job_of_each_key(runtime: Runtime) -> None:
    rt = runtime
    await add_queue(rt, "t-keys")
    await rt.queues.set_limits("t-keys", max_running_per_key=1)
    for key in ("a", "a", "a", "b", "b", None):
        await rt.inserts.create_job(NewJob(queue_name="t-keys", payload={}, concurrency_key=key))

    await rt.migrator().move_due_jobs()

    rows = await rt.pool.fetch(
        "SELECT concurrency_key, count(*) AS n FROM jobs "
        "WHERE status = 'migrated_to_redis' GROUP BY 1"
    )
    assert {r["concurrency_key"]: r["n"] for r in rows} == {"a": 1, "b": 1, None: 1}


async def test_a_spent_rate_limit_waits_for_its_window(runtime: Runtime) -> None:
    rt = runtime
    await add_queue(rt, "t-rated")
    await rt.queues.set_limits("t-rated", rate_limit=2, rate_period=60)
    # Two jobs of the queue started 10 s ago: the window holds until they are 60 s old.
    for _ in range(2):
        job = await create_job(rt, "t-rated")
        await rt.pool.execute(
            "UPDATE jobs SET status = 'completed', limited = true, "
            "started_at = now() - interval '10 seconds' WHERE id = $1",
            job,
        )
    waiting = await create_job(rt, "t-rated")

    result = await rt.migrator().move_due_jobs()

    assert result.moved == 0
    assert await job_status(rt, waiting) == "queued"
    assert result.limit_wake == pytest.approx(50, abs=1)


async def test_a_full_queue_is_filled_again_once_workers_make_room(
    runtime: Runtime, settings: Settings
) -> None:
    rt = runtime
    settings.redis_queue_max_depth = 2
    settings.migrator_batch_size = 2
    await add_queue(rt, "t-fills")
    jobs = [await create_job(rt, "t-fills") for _ in range(3)]
    migrator = rt.migrator()
    task = asyncio.create_task(migrator.run())
    try:
        await wait_for(lambda: _asleep(migrator.asleep), what="the migrator to sleep")
        assert [await job_status(rt, j) for j in jobs].count("queued") == 1
        # A worker pops both: no notification, the Redis recheck finds room.
        await rt.redis.delete(*rt.keys.queue_lists("t-fills"))

        async def third_moved() -> bool:
            return await job_status(rt, jobs[2]) == "migrated_to_redis"

        await wait_for(third_moved, timeout=2, what="the third job to move")
    finally:
        migrator.stop()
        await task


async def _asleep(event: asyncio.Event) -> bool:
    return event.is_set()


async def test_a_retry_waiting_for_its_backoff_wakes_the_sleeping_migrator(
    runtime: Runtime, settings: Settings
) -> None:
    rt = runtime
    settings.migrator_poll_interval = 60.0  # only a notification or a timer wakes it
    await add_queue(rt, "t-retry-wake")
    job = await create_job(rt, "t-retry-wake")
    migrator = rt.migrator()
    task = asyncio.create_task(migrator.run())
    try:

        async def moved() -> bool:
            return await job_status(rt, job) == "migrated_to_redis"

        await wait_for(moved, what="the job to move")
        await wait_for(lambda: _asleep(migrator.asleep), what="the migrator to sleep")
        # Nothing to do: it stays asleep (an observation window, not a wait).
        idle_from = migrator.passes
        await asyncio.sleep(0.3)
        assert migrator.passes == idle_from
        # The attempt fails; the retry is due in half a second (a scheduled job).
        await rt.pool.execute(
            "UPDATE jobs SET status = 'running', worker_id = 'w', attempt_count = 1 WHERE id = $1",
            job,
        )
        await rt.pool.execute(
            "UPDATE jobs SET status = 'queued', run_at = now() + interval '0.5 seconds' "
            "WHERE id = $1",
            job,
        )
        assert await job_status(rt, job) == "scheduled"
        await wait_for(moved, timeout=3, what="the retry to move when due")
    finally:
        migrator.stop()
        await task
