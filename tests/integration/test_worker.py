"""Workers on real PostgreSQL and Redis: claim, run, record, retry, fence, shut down."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from app.loops import wait_any
from app.registry import HandlerRegistry, Job
from app.runtime import BackgroundServices, Runtime
from app.settings import Settings
from app.worker import runner as runner_module
from tests.support.factories import (
    add_queue,
    create_job,
    job_row,
    job_status,
    run_until_settled,
    wait_for,
)


async def logs_of(rt: Runtime, job_id: uuid.UUID) -> list[dict[str, object]]:
    rows = await rt.pool.fetch(
        "SELECT status, log_message, attempt_number, worker_id, started_at, finished_at, "
        "duration FROM job_logs WHERE job_id = $1 ORDER BY attempt_number, created_at",
        job_id,
    )
    return [dict(r) for r in rows]


async def test_a_job_runs_once_and_its_attempt_is_recorded(
    runtime: Runtime, registry: HandlerRegistry
) -> None:
    rt = runtime
    seen: list[Job] = []

    @registry.handler("t-ok")
    async def ok(job: Job) -> None:
        seen.append(job)

    await add_queue(rt, "t-ok")
    job_id = await create_job(rt, "t-ok", {"to": "a@example.com"}, priority=42, max_attempts=5)
    worker = rt.worker(burst=True)
    await rt.migrator().move_due_jobs()
    await worker.run()

    assert [
        (j.id, j.attempt, j.max_attempts, j.payload, j.queue_name, j.priority) for j in seen
    ] == [(job_id, 1, 5, {"to": "a@example.com"}, "t-ok", 42)]
    row = await job_row(rt, job_id)
    assert row["status"] == "completed"
    assert row["attempt_count"] == 1
    assert row["worker_id"] == worker.worker_id
    assert row["completed_at"] is not None and row["started_at"] is not None
    assert row["lease_expires_at"] is None
    (log,) = await logs_of(rt, job_id)
    assert log["status"] == "completed"
    assert log["attempt_number"] == 1
    assert log["worker_id"] == worker.worker_id
    assert log["finished_at"] >= log["started_at"]  # type: ignore[operator]
    assert log["duration"] == log["finished_at"] - log["started_at"]  # type: ignore[operator]

    state = await rt.redis.hgetall(rt.keys.job(str(job_id)))
    assert state[b"status"] == b"completed"
    assert state[b"worker_id"] == worker.worker_id.encode()
    assert state[b"attempt_count"] == b"1"
    assert b"started_at" in state and b"completed_at" in state
    ttl = await rt.redis.ttl(rt.keys.job(str(job_id)))
    assert 0 < ttl <= rt.settings.job_hash_ttl
    # Nothing is left in Redis lists.
    assert sum([await rt.redis.llen(k) for k in rt.keys.queue_lists("t-ok")]) == 0


async def test_duplicate_copies_in_redis_run_once(
    runtime: Runtime, registry: HandlerRegistry
) -> None:
    rt = runtime
    runs: list[uuid.UUID] = []

    @registry.handler("t-dup")
    async def record(job: Job) -> None:
        runs.append(job.id)

    await add_queue(rt, "t-dup")
    job_id = await create_job(rt, "t-dup")
    await rt.migrator().move_due_jobs()
    key = rt.keys.route("t-dup", 100)
    message = (await rt.redis.lrange(key, 0, -1))[0]
    await rt.redis.lpush(key, message, message)  # three copies in all

    # Two workers at once: one claim wins, every other copy is dropped unrun.
    await asyncio.gather(rt.worker(burst=True).run(), rt.worker(burst=True).run())

    assert runs == [job_id]
    assert len(await logs_of(rt, job_id)) == 1
    assert await rt.redis.llen(key) == 0


async def test_a_cancelled_job_popped_from_redis_is_dropped(
    runtime: Runtime, registry: HandlerRegistry
) -> None:
    rt = runtime
    runs: list[uuid.UUID] = []

    @registry.handler("t-cancel")
    async def record(job: Job) -> None:
        runs.append(job.id)

    await add_queue(rt, "t-cancel")
    job_id = await create_job(rt, "t-cancel")
    await rt.migrator().move_due_jobs()
    await rt.pool.execute("UPDATE jobs SET status = 'cancelled' WHERE id = $1", job_id)

    await rt.worker(burst=True).run()

    assert runs == []
    assert await job_status(rt, job_id) == "cancelled"


async def test_high_before_normal_before_low(runtime: Runtime, registry: HandlerRegistry) -> None:
    rt = runtime
    order: list[int] = []

    @registry.handler("t-prio-a")
    @registry.handler("t-prio-b")
    async def record(job: Job) -> None:
        order.append(job.priority)

    await add_queue(rt, "t-prio-a")
    await add_queue(rt, "t-prio-b")
    # Created least urgent first, spread over two queues.
    for priority, queue in (
        (900, "t-prio-a"),
        (100, "t-prio-b"),
        (10, "t-prio-a"),
        (500, "t-prio-b"),
        (120, "t-prio-a"),
        (40, "t-prio-b"),
    ):
        await create_job(rt, queue, priority=priority)
    await rt.migrator().move_due_jobs()

    await rt.worker(burst=True, concurrency=1).run()

    levels = ["high" if p <= 50 else "normal" if p <= 150 else "low" for p in order]
    assert levels == ["high", "high", "normal", "normal", "low", "low"]


async def test_a_failed_attempt_waits_in_postgres_by_run_at(
    runtime: Runtime, registry: HandlerRegistry, settings: Settings
) -> None:
    rt = runtime
    settings.backoff_base = 30.0  # long enough to observe, no worker waits for it
    settings.backoff_max = 60.0

    @registry.handler("t-flaky")
    async def flaky(job: Job) -> None:
        raise ValueError(f"smtp down on attempt {job.attempt}")

    await add_queue(rt, "t-flaky")
    job_id = await create_job(rt, "t-flaky", max_attempts=3)
    await rt.migrator().move_due_jobs()
    t0 = datetime.now(UTC)
    await rt.worker(burst=True).run()  # returns at once: nothing sleeps in the worker
    assert datetime.now(UTC) - t0 < timedelta(seconds=10)

    row = await job_row(rt, job_id)
    assert row["status"] == "scheduled"  # not due yet: no migrator pass reads it
    assert row["attempt_count"] == 1
    assert row["last_error_message"] == "ValueError: smtp down on attempt 1"
    delay = (row["run_at"] - row["updated_at"]).total_seconds()
    assert delay == pytest.approx(30.0, abs=0.5)  # backoff_base * 2**0
    (log,) = await logs_of(rt, job_id)
    assert log["status"] == "failed"
    assert log["attempt_number"] == 1
    assert "ValueError: smtp down on attempt 1" in str(log["log_message"])
    state = await rt.redis.hgetall(rt.keys.job(str(job_id)))
    assert state[b"status"] == b"scheduled"
    assert state[b"last_error"] == b"ValueError: smtp down on attempt 1"
    # Not due yet: the migrator leaves it alone.
    assert (await rt.migrator().move_due_jobs()).moved == 0


async def test_retries_then_succeeds_with_one_log_row_per_attempt(
    runtime: Runtime, registry: HandlerRegistry
) -> None:
    rt = runtime

    @registry.handler("t-retry")
    async def flaky(job: Job) -> None:
        if job.attempt < 3:
            raise RuntimeError(f"attempt {job.attempt}")

    await add_queue(rt, "t-retry")
    job_id = await create_job(rt, "t-retry", max_attempts=3)
    await run_until_settled(rt)

    row = await job_row(rt, job_id)
    assert row["status"] == "completed"
    assert row["attempt_count"] == 3
    logs = await logs_of(rt, job_id)
    assert [(r["attempt_number"], r["status"]) for r in logs] == [
        (1, "failed"),
        (2, "failed"),
        (3, "completed"),
    ]


async def test_exhausted_attempts_fail_the_job(runtime: Runtime, registry: HandlerRegistry) -> None:
    rt = runtime

    @registry.handler("t-doomed")
    def doomed(job: Job) -> None:
        raise KeyError("campaign_id")

    await add_queue(rt, "t-doomed")
    job_id = await create_job(rt, "t-doomed", max_attempts=2)
    await run_until_settled(rt)

    row = await job_row(rt, job_id)
    assert row["status"] == "failed"
    assert row["attempt_count"] == 2
    assert row["failed_at"] is not None
    assert row["last_error_message"] == "KeyError: 'campaign_id'"
    logs = await logs_of(rt, job_id)
    assert [(r["attempt_number"], r["status"]) for r in logs] == [(1, "failed"), (2, "failed")]
    assert "attempts exhausted" in str(logs[-1]["log_message"])
    state = await rt.redis.hgetall(rt.keys.job(str(job_id)))
    assert state[b"status"] == b"failed"


async def _one_attempt(rt: Runtime, queue: str) -> asyncpg.Record:
    """Run one job of `queue` (a single attempt) with a burst worker; its row after."""
    await add_queue(rt, queue)
    job_id = await create_job(rt, queue, max_attempts=1)
    await rt.migrator().move_due_jobs()
    await rt.worker(burst=True).run()
    return await job_row(rt, job_id)


async def test_a_handler_past_its_timeout_fails_the_attempt(
    runtime: Runtime, registry: HandlerRegistry
) -> None:
    rt = runtime
    cancelled = asyncio.Event()

    @registry.handler("t-slow", timeout=0.2)
    async def slow(job: Job) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    row = await _one_attempt(rt, "t-slow")

    assert cancelled.is_set()
    assert row["status"] == "failed"
    assert row["last_error_message"] == "TimeoutError: handler ran longer than 0.2s"


async def test_a_handler_that_swallows_its_timeout_still_fails_the_attempt(
    runtime: Runtime, registry: HandlerRegistry
) -> None:
    rt = runtime

    @registry.handler("t-stubborn", timeout=0.2)
    async def stubborn(job: Job) -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return "finished anyway"  # swallows the cancel
        return "never"

    row = await _one_attempt(rt, "t-stubborn")

    assert row["status"] == "failed"
    assert row["last_error_message"] == "TimeoutError: handler ran longer than 0.2s"


async def test_a_timeout_error_of_the_handler_itself_is_reported_as_raised(
    runtime: Runtime, registry: HandlerRegistry
) -> None:
    """Only the worker's own limit reads "ran longer than": a handler's network timeout
    is its error, well within the handler's time."""
    rt = runtime

    @registry.handler("t-own-timeout", timeout=30)
    async def gives_up(job: Job) -> None:
        raise TimeoutError("SMTP server did not answer in 5s")

    row = await _one_attempt(rt, "t-own-timeout")

    assert row["status"] == "failed"
    assert row["last_error_message"] == "TimeoutError: SMTP server did not answer in 5s"


async def test_plain_functions_run_in_a_thread_without_blocking_the_loop(
    runtime: Runtime, registry: HandlerRegistry
) -> None:
    rt = runtime
    threads: list[str] = []
    release = threading.Event()
    loop_ticks = 0

    @registry.handler("t-sync")
    def blocking(job: Job) -> None:
        threads.append(threading.current_thread().name)
        assert release.wait(10), "the loop never released the handler"

    await add_queue(rt, "t-sync")
    job_id = await create_job(rt, "t-sync")
    await rt.migrator().move_due_jobs()
    worker_task = asyncio.create_task(rt.worker(burst=True).run())
    # While the handler blocks its thread, the event loop keeps running.
    await wait_for(lambda: _true_when(bool(threads)), what="the handler to start")
    for _ in range(5):
        await asyncio.sleep(0)
        loop_ticks += 1
    release.set()
    await worker_task

    assert loop_ticks == 5
    assert threads and threads[0] != threading.main_thread().name
    assert await job_status(rt, job_id) == "completed"


async def test_a_worker_that_lost_its_claim_cannot_record_an_outcome(
    runtime: Runtime, registry: HandlerRegistry
) -> None:
    """Invariant 2: the outcome applies only while (worker_id, attempt) still holds."""
    rt = runtime

    @registry.handler("t-fence")
    async def overtaken(job: Job) -> None:
        # Meanwhile another worker took the job over as a newer attempt.
        await rt.pool.execute(
            "UPDATE jobs SET worker_id = 'other-worker', attempt_count = attempt_count + 1 "
            "WHERE id = $1",
            job.id,
        )

    await add_queue(rt, "t-fence")
    job_id = await create_job(rt, "t-fence")
    await rt.migrator().move_due_jobs()
    await rt.worker(burst=True).run()

    row = await job_row(rt, job_id)
    assert row["status"] == "running"
    assert row["worker_id"] == "other-worker"
    assert row["attempt_count"] == 2
    assert await logs_of(rt, job_id) == []


async def test_shutdown_lets_in_flight_jobs_finish(
    runtime: Runtime, registry: HandlerRegistry
) -> None:
    rt = runtime
    started = asyncio.Event()
    finish = asyncio.Event()

    @registry.handler("t-inflight")
    async def slow(job: Job) -> None:
        started.set()
        await finish.wait()

    await add_queue(rt, "t-inflight")
    job_id = await create_job(rt, "t-inflight")
    worker = rt.worker()
    services = BackgroundServices(rt.migrator(), worker)
    services.start()
    await asyncio.wait_for(started.wait(), 10)

    services.stop()
    assert worker.in_flight == 1
    finish.set()
    await asyncio.wait_for(services.wait(), 10)

    assert await job_status(rt, job_id) == "completed"


async def test_shutdown_hands_back_what_does_not_finish_in_the_grace_period(
    runtime: Runtime, registry: HandlerRegistry, settings: Settings
) -> None:
    rt = runtime
    settings.shutdown_grace_period = 0.2
    started = asyncio.Event()

    @registry.handler("t-stuck")
    async def stuck(job: Job) -> None:
        started.set()
        await asyncio.sleep(60)

    await add_queue(rt, "t-stuck")
    job_id = await create_job(rt, "t-stuck")
    await rt.migrator().move_due_jobs()
    worker = rt.worker()
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 10)
    worker.stop()
    await asyncio.wait_for(task, 10)

    row = await job_row(rt, job_id)
    assert row["status"] == "queued"
    assert row["attempt_count"] == 0  # the attempt was not spent
    (log,) = await logs_of(rt, job_id)
    assert log["status"] == "interrupted"
    assert log["attempt_number"] == 1


async def test_a_future_job_starts_after_run_at_and_within_a_second(
    runtime: Runtime, registry: HandlerRegistry, settings: Settings
) -> None:
    rt = runtime
    settings.migrator_poll_interval = 30.0
    started_at: list[datetime] = []

    @registry.handler("t-timed")
    async def timed(job: Job) -> None:
        started_at.append(datetime.now(UTC))

    await add_queue(rt, "t-timed")
    services = BackgroundServices(rt.migrator(), rt.worker())
    services.start()
    try:
        run_at = datetime.now(UTC) + timedelta(seconds=1.5)
        job_id = await create_job(rt, "t-timed", run_at=run_at)
        await wait_for(lambda: _completed(rt, job_id), timeout=10, what="job completed")
    finally:
        await services.shutdown(5)
    assert len(started_at) == 1
    assert started_at[0] >= run_at
    assert started_at[0] - run_at < timedelta(seconds=1)


async def test_the_worker_heartbeat_key_lives_while_it_runs(
    runtime: Runtime, registry: HandlerRegistry
) -> None:
    rt = runtime

    @registry.handler("t-hb")
    async def noop(job: Job) -> None:
        return None

    worker = rt.worker()
    task = asyncio.create_task(worker.run())
    key = rt.keys.worker_heartbeat(worker.worker_id)
    t0 = time.monotonic()
    while not await rt.redis.exists(key):
        assert time.monotonic() - t0 < 5, "no heartbeat key"
        await asyncio.sleep(0.01)
    assert 0 < await rt.redis.ttl(key) <= int(rt.settings.visibility_timeout)
    worker.stop()
    await task
    assert not await rt.redis.exists(key)


async def _true_when(value: bool) -> bool:
    return value


async def _completed(rt: Runtime, job_id: uuid.UUID) -> bool:
    return await job_status(rt, job_id) == "completed"


async def test_a_copy_popped_before_the_migrators_commit_is_claimed(
    runtime: Runtime, registry: HandlerRegistry
) -> None:
    """The migrator pushes inside its transaction and commits after: a worker can pop
    the copy first, when the job still looks queued to it. The claim must wait for the
    migrator's commit rather than drop the copy (which would strand the job)."""
    rt = runtime
    runs: list[uuid.UUID] = []

    @registry.handler("t-race")
    async def record(job: Job) -> None:
        runs.append(job.id)

    await add_queue(rt, "t-race")
    job_id = await create_job(rt, "t-race")
    async with rt.pool.acquire() as conn:
        tr = conn.transaction()
        await tr.start()
        (moved,) = await rt.store.move_due_jobs(conn, ["t-race"], 10)
        await rt.redis.lpush(rt.keys.route("t-race", moved.priority), moved.message)
        worker = asyncio.create_task(rt.worker(burst=True).run())
        await asyncio.sleep(0.3)  # the worker pops the copy and claims: a slow commit
        await tr.commit()
    await asyncio.wait_for(worker, 10)

    assert runs == [job_id]
    assert await job_status(rt, job_id) == "completed"


async def test_a_busy_worker_fills_its_free_slots_together(
    runtime: Runtime, registry: HandlerRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With most slots busy, a worker waits (up to REFILL_WAIT) for half of them to be
    free, then pops, claims and writes for all of them in one go, instead of one round
    trip of each per finished job."""
    rt = runtime
    monkeypatch.setattr(runner_module, "REFILL_WAIT", 30.0)  # only the slots decide
    release: dict[int, asyncio.Event] = {i: asyncio.Event() for i in range(8)}

    @registry.handler("t-refill")
    async def waits(job: Job) -> None:
        await release[job.payload["n"]].wait()

    await add_queue(rt, "t-refill")
    for n in range(8):
        await create_job(rt, "t-refill", payload={"n": n})
    await rt.migrator().move_due_jobs()
    worker = rt.worker(burst=True, concurrency=4)
    claimed: list[int] = []
    claim = worker.store.claim

    async def counting_claim(job_ids: Any, *args: Any) -> Any:
        claimed.append(len(job_ids))
        return await claim(job_ids, *args)

    monkeypatch.setattr(worker.store, "claim", counting_claim)
    run = asyncio.create_task(worker.run())
    await wait_for(lambda: _true_when(worker.in_flight == 4), what="4 jobs running")
    release[0].set()
    await wait_for(lambda: _true_when(worker.in_flight == 3), what="job 0 to finish")
    release[1].set()  # now 2 of 4 slots are free: one pop for both
    await wait_for(lambda: _true_when(worker.in_flight == 4), what="2 more jobs running")
    for event in release.values():
        event.set()
    await run
    assert claimed[:2] == [4, 2]
    assert sum(claimed) == 8


async def test_a_worker_stopped_while_it_waits_to_refill_pops_nothing_more(
    runtime: Runtime, registry: HandlerRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = runtime
    monkeypatch.setattr(runner_module, "REFILL_WAIT", 30.0)
    release = asyncio.Event()
    first = asyncio.Event()
    refilling = asyncio.Event()

    async def spy(*events: asyncio.Event, timeout: float | None = None) -> None:
        if timeout == 30.0:  # the refill wait
            refilling.set()
        await wait_any(*events, timeout=timeout)

    monkeypatch.setattr(runner_module, "wait_any", spy)

    @registry.handler("t-refill-stop")
    async def waits(job: Job) -> None:
        if job.payload["n"] == 0:
            await first.wait()
        else:
            await release.wait()

    await add_queue(rt, "t-refill-stop")
    ids = [await create_job(rt, "t-refill-stop", payload={"n": n}) for n in range(6)]
    await rt.migrator().move_due_jobs()
    worker = rt.worker(concurrency=4)
    run = asyncio.create_task(worker.run())
    await wait_for(lambda: _true_when(worker.in_flight == 4), what="4 jobs running")
    first.set()  # one slot frees: the worker waits for a second
    await asyncio.wait_for(refilling.wait(), 10)
    worker.stop()
    release.set()
    await run
    statuses = [await job_status(rt, job_id) for job_id in ids]
    assert statuses.count("completed") == 4
    assert statuses.count("migrated_to_redis") == 2  # left in Redis for the next worker


async def test_a_worker_runs_more_jobs_while_their_outcomes_wait_for_postgresql(
    runtime: Runtime, registry: HandlerRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job whose handler returned leaves its slot while its outcome commits, so a slow
    commit does not idle the worker; up to `concurrency` such jobs, then it waits."""
    rt = runtime
    started: list[int] = []
    go = asyncio.Event()
    parked: list[tuple[int, int]] = []  # (jobs started, handlers returned) at each wait

    async def spy(*events: asyncio.Event, timeout: float | None = None) -> None:
        if timeout is None:
            returned = sum(e.recording for e in worker.running().values())
            parked.append((len(started), returned))
        await wait_any(*events, timeout=timeout)

    monkeypatch.setattr(runner_module, "wait_any", spy)

    @registry.handler("t-slots")
    async def runs(job: Job) -> None:
        started.append(job.payload["n"])
        if job.payload["n"] < 2:
            await go.wait()

    await add_queue(rt, "t-slots")
    ids = [await create_job(rt, "t-slots", payload={"n": n}) for n in range(6)]
    await rt.migrator().move_due_jobs()
    worker = rt.worker(burst=True, concurrency=2)
    run = asyncio.create_task(worker.run())
    await wait_for(lambda: _true_when(sorted(started) == [0, 1]), what="jobs 0 and 1 running")
    async with rt.pool.acquire() as conn, conn.transaction():
        # PostgreSQL cannot write the outcomes of jobs 0 and 1 while this lock holds.
        await conn.execute("SELECT 1 FROM jobs WHERE id = ANY($1) FOR UPDATE", ids[:2])
        go.set()
        await wait_for(
            lambda: _true_when((4, 4) in parked), what="4 handlers returned, the worker waiting"
        )
        assert sorted(started) == [0, 1, 2, 3]
        assert [await job_status(rt, i) for i in ids] == ["running"] * 4 + ["migrated_to_redis"] * 2
    await run
    assert sorted(started) == list(range(6))
    assert [await job_status(rt, i) for i in ids] == ["completed"] * 6
