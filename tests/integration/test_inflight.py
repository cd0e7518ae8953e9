"""The reliable pop: every popped message leaves an in-flight entry, and a job whose
worker stopped between its pop and its outcome comes back within the visibility timeout,
however deep the queue. Also fairness between queues, and the drain of the lists of the
earlier key format."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import orjson

from app.maintenance.inflight import InflightRecovery
from app.registry import HandlerRegistry, Job
from app.runtime import Runtime
from app.worker.fetch import Fetcher
from tests.support.factories import add_queue, create_job, job_status, wait_for

DEEP = 3000


async def fill(rt: Runtime, queue: str, n: int, priority: int = 100) -> None:
    """n queued jobs in one statement, then moved to Redis."""
    await rt.pool.execute(
        "INSERT INTO jobs (queue_name, payload, priority) "
        "SELECT $1, jsonb_build_object('n', g), $3 FROM generate_series(1, $2) g",
        queue,
        n,
        priority,
    )
    rt.settings.redis_queue_max_depth = 1_000_000
    await rt.migrator().move_due_jobs()


async def depth(rt: Runtime, queue: str) -> int:
    return sum([await rt.redis.llen(k) for k in rt.keys.queue_lists(queue)])


async def test_a_job_popped_by_a_worker_that_died_comes_back_first_despite_a_deep_backlog(
    runtime: Runtime,
) -> None:
    rt = runtime
    rt.settings.visibility_timeout = 0.3
    await add_queue(rt, "t-lost")
    await fill(rt, "t-lost", DEEP)
    lost = await create_job(rt, "t-lost", priority=10)
    await rt.migrator().move_due_jobs()
    # A worker pops the urgent job and dies before its claim.
    (popped,) = await Fetcher(rt.redis, rt.keys, ["t-lost"]).pop(1)
    assert orjson.loads(popped.message)["id"] == str(lost)
    assert await rt.redis.zcard(rt.keys.inflight("t-lost")) == 1
    recovery = InflightRecovery(rt.recovery, rt.redis, rt.keys, rt.settings)
    assert await recovery.run_once() == 0  # younger than the visibility timeout

    async def pushed_back() -> bool:
        return await recovery.run_once() == 1

    await wait_for(pushed_back, timeout=5, what="the lost job to be pushed back")
    assert await rt.redis.zcard(rt.keys.inflight("t-lost")) == 0
    assert await depth(rt, "t-lost") == DEEP + 1  # the backlog untouched
    # The next pop takes it first, and its claim wins: it runs again.
    (again,) = await Fetcher(rt.redis, rt.keys, ["t-lost"]).pop(1)
    assert again.message == popped.message
    (claim,) = await rt.store.claim([lost], "w-2", 30)
    assert claim.attempt == 1


async def test_a_claim_lost_after_the_pop_keeps_the_entry_until_an_outcome_is_written(
    runtime: Runtime, registry: HandlerRegistry
) -> None:
    """As when PostgreSQL crashes before the asynchronous commit of a claim: the job is
    migrated_to_redis again, the worker's outcome is discarded by the fence, and the
    in-flight entry brings the job back."""
    rt = runtime
    rt.settings.visibility_timeout = 0.5
    runs: list[int] = []

    @registry.handler("t-lostclaim")
    async def forget_the_claim(job: Job) -> None:
        runs.append(job.attempt)
        if len(runs) == 1:  # the claim vanishes while the handler runs
            await rt.pool.execute(
                "UPDATE jobs SET status = 'migrated_to_redis', attempt_count = 0, "
                "worker_id = NULL, lease_token = NULL WHERE id = $1",
                job.id,
            )

    await add_queue(rt, "t-lostclaim")
    job_id = await create_job(rt, "t-lostclaim", priority=10)
    await rt.migrator().move_due_jobs()
    await rt.worker(burst=True).run()
    assert runs == [1]
    assert await job_status(rt, job_id) == "migrated_to_redis"
    assert await rt.redis.zcard(rt.keys.inflight("t-lostclaim")) == 1

    recovery = InflightRecovery(rt.recovery, rt.redis, rt.keys, rt.settings)

    async def pushed_back() -> bool:
        return await recovery.run_once() == 1

    await wait_for(pushed_back, timeout=5, what="the job to be pushed back")
    await rt.worker(burst=True).run()
    assert runs == [1, 1]
    assert await job_status(rt, job_id) == "completed"
    assert await rt.redis.zcard(rt.keys.inflight("t-lostclaim")) == 0


async def test_entries_of_finished_jobs_and_duplicate_copies_are_removed(
    runtime: Runtime, registry: HandlerRegistry
) -> None:
    rt = runtime

    @registry.handler("t-clean")
    async def ok(job: Job) -> None:
        return None

    await add_queue(rt, "t-clean")
    ids = [await create_job(rt, "t-clean") for _ in range(20)]
    await rt.migrator().move_due_jobs()
    # A duplicate copy of one job (as after a migrator crash before its commit).
    (message,) = await rt.redis.lrange(rt.keys.route("t-clean", 100), 0, 0)
    await rt.redis.lpush(rt.keys.route("t-clean", 100), message)
    await rt.worker(burst=True).run()
    assert {await job_status(rt, i) for i in ids} == {"completed"}
    assert await rt.redis.zcard(rt.keys.inflight("t-clean")) == 0
    assert await depth(rt, "t-clean") == 0


async def test_two_queues_at_the_same_priority_progress_at_comparable_rates(
    runtime: Runtime, registry: HandlerRegistry
) -> None:
    rt = runtime
    done: list[str] = []
    enough = asyncio.Event()

    async def record(job: Job) -> None:
        done.append(job.queue_name)
        if len(done) >= 400:
            enough.set()

    registry.handler("t-analytics")(record)
    registry.handler("t-webhook")(record)
    for q in ("t-analytics", "t-webhook"):
        await add_queue(rt, q)
        await fill(rt, q, 1000)
    worker = rt.worker(concurrency=10)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(enough.wait(), 30)
    worker.stop()
    await task
    counts = Counter(done[:400])
    assert 150 <= counts["t-analytics"] <= 250, counts
    assert 150 <= counts["t-webhook"] <= 250, counts


async def test_messages_in_lists_of_the_earlier_key_format_are_moved_and_run(
    runtime: Runtime, registry: HandlerRegistry
) -> None:
    rt = runtime
    ran: list[uuid.UUID] = []

    @registry.handler("t-old")
    async def record(job: Job) -> None:
        ran.append(job.id)

    @registry.handler("t-old:high")
    async def record_other(job: Job) -> None:
        ran.append(job.id)

    await add_queue(rt, "t-old")
    await add_queue(rt, "t-old:high")
    await fill(rt, "t-old", DEEP)
    await fill(rt, "t-old:high", 5)
    # As an earlier migrator left them: `queue:<name>` lists, where queue `t-old:high`'s
    # normal list is the same key as queue `t-old`'s high list.
    moved: list[bytes] = []
    for q in ("t-old", "t-old:high"):
        for key in rt.keys.queue_lists(q):
            moved += [m for m in await rt.redis.lrange(key, 0, -1) if isinstance(m, bytes)]
            await rt.redis.delete(key)
    for message in moved:
        data = orjson.loads(message)
        old = rt.keys.legacy_queue_lists(data["queue_name"])
        level = 0 if data["priority"] <= 50 else 1 if data["priority"] <= 150 else 2
        await rt.redis.lpush(old[level], message)
    assert await depth(rt, "t-old") == 0

    recovery = InflightRecovery(rt.recovery, rt.redis, rt.keys, rt.settings)
    assert await recovery.run_once() == DEEP + 5
    assert await recovery.run_once() == 0
    assert await depth(rt, "t-old") == DEEP
    assert await depth(rt, "t-old:high") == 5
    await rt.worker(burst=True).run()
    assert len(ran) == len(set(ran)) == DEEP + 5


async def test_a_running_job_keeps_its_entry_fresh_and_is_not_pushed_back(
    runtime: Runtime, registry: HandlerRegistry
) -> None:
    rt = runtime
    rt.settings.visibility_timeout = 0.6  # the heartbeat beats every 0.2 s
    started, release = asyncio.Event(), asyncio.Event()

    @registry.handler("t-long")
    async def long(job: Job) -> None:
        started.set()
        await release.wait()

    await add_queue(rt, "t-long")
    job_id = await create_job(rt, "t-long")
    await rt.migrator().move_due_jobs()
    worker = rt.worker()
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 10)
    recovery = InflightRecovery(rt.recovery, rt.redis, rt.keys, rt.settings)
    deadline = asyncio.get_running_loop().time() + 2.0  # over three visibility timeouts
    while asyncio.get_running_loop().time() < deadline:
        assert await recovery.run_once() == 0
        await asyncio.sleep(0.05)
    assert await rt.redis.zcard(rt.keys.inflight("t-long")) == 1
    release.set()
    await wait_for(lambda: _completed(rt, job_id), timeout=10, what="the job to complete")
    worker.stop()
    await task
    assert await rt.redis.zcard(rt.keys.inflight("t-long")) == 0


async def _completed(rt: Runtime, job_id: uuid.UUID) -> bool:
    return await job_status(rt, job_id) == "completed"
