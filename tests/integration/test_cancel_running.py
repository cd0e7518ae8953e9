"""Cancelling a running job: its worker learns it (Redis pub/sub, or PostgreSQL at its
heartbeat), cancels an async handler or raises the flag a sync handler reads, and records
the job `cancelled` with the actor; an outcome the handler reports afterwards is
discarded. A job asked to stop whose worker died is cancelled, not run again."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
import uuid

import httpx

from app.maintenance.cancels import AbandonedCancels
from app.registry import HandlerRegistry, Job
from app.runtime import Runtime
from app.worker.runner import Worker
from tests.support.factories import add_queue, create_job, job_row


async def statuses_logged(rt: Runtime, job_id: uuid.UUID) -> list[tuple[str, str | None]]:
    rows = await rt.pool.fetch(
        "SELECT status, actor FROM job_logs WHERE job_id = $1 ORDER BY created_at", job_id
    )
    return [(r["status"], r["actor"]) for r in rows]


async def start_running(
    rt: Runtime, queue: str, started: asyncio.Event
) -> tuple[uuid.UUID, Worker, asyncio.Task[None]]:
    """A job of `queue` whose handler has started, in a burst worker listening for
    cancels."""
    job_id = await create_job(rt, queue)
    await rt.migrator().move_due_jobs()
    worker = rt.worker(burst=True)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.wait_for(worker.cancels.subscribed.wait(), 10)
    return job_id, worker, task


async def test_cancel_stops_a_long_async_handler(
    runtime: Runtime, registry: HandlerRegistry, client: httpx.AsyncClient
) -> None:
    rt = runtime
    started = asyncio.Event()
    cancelled_in_handler: list[bool] = []

    @registry.handler("t-long-async")
    async def long_running(job: Job) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled_in_handler.append(True)
            raise

    await add_queue(rt, "t-long-async")
    job_id, _worker, task = await start_running(rt, "t-long-async", started)
    response = await client.post(f"/jobs/{job_id}/cancel", params={"reason": "wrong list"})
    assert response.status_code == 200, response.text
    # Stopped within CANCEL_WAIT (2 s): over pub/sub, not at a heartbeat (every 10 s).
    assert (response.json()["status"], response.json()["outcome"]) == ("cancelled", "stopped")
    await asyncio.wait_for(task, 10)

    assert cancelled_in_handler == [True]
    row = await job_row(rt, job_id)
    assert (row["status"], row["attempt_count"], row["lease_expires_at"]) == ("cancelled", 1, None)
    assert await statuses_logged(rt, job_id) == [
        ("cancel_requested", "anonymous"),
        ("cancelled", "anonymous"),
    ]
    message = await rt.pool.fetchval(
        "SELECT log_message FROM job_logs WHERE job_id = $1 AND status = 'cancelled'", job_id
    )
    assert message == "wrong list (stopped while running)"
    assert (await client.get(f"/jobs/{job_id}")).json()["status"] == "cancelled"
    assert await rt.redis.hget(rt.keys.job(str(job_id)), "status") == b"cancelled"


async def test_cancel_raises_the_flag_of_a_long_sync_handler(
    runtime: Runtime, registry: HandlerRegistry, client: httpx.AsyncClient
) -> None:
    rt = runtime
    started = asyncio.Event()
    loop = asyncio.get_running_loop()
    saw_flag = threading.Event()

    @registry.handler("t-long-sync")
    def long_running(job: Job) -> str:
        loop.call_soon_threadsafe(started.set)
        deadline = time.monotonic() + 30
        while not job.cancel_requested and time.monotonic() < deadline:
            time.sleep(0.01)
        saw_flag.set()
        return "done"  # would complete the job: discarded, the job was cancelled

    await add_queue(rt, "t-long-sync")
    job_id, _worker, task = await start_running(rt, "t-long-sync", started)
    response = await client.post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "stopped"
    await asyncio.wait_for(task, 10)

    assert saw_flag.is_set()
    assert (await job_row(rt, job_id))["status"] == "cancelled"
    assert [s for s, _ in await statuses_logged(rt, job_id)] == ["cancel_requested", "cancelled"]


async def test_an_outcome_reported_after_the_cancel_is_discarded(
    runtime: Runtime, registry: HandlerRegistry, client: httpx.AsyncClient
) -> None:
    """A sync handler that does not look at the flag: the cancel is recorded (202), and
    when the handler returns, its success is not recorded: the job ends cancelled."""
    rt = runtime
    rt.settings = rt.settings.replace(cancel_wait=0.2)
    started = asyncio.Event()
    loop = asyncio.get_running_loop()
    release = threading.Event()

    @registry.handler("t-stubborn")
    def stubborn(job: Job) -> None:
        loop.call_soon_threadsafe(started.set)
        release.wait(30)

    await add_queue(rt, "t-stubborn")
    job_id, _worker, task = await start_running(rt, "t-stubborn", started)
    response = await client.post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 202, response.text
    assert (response.json()["status"], response.json()["outcome"]) == ("running", "requested")
    assert (await client.get(f"/jobs/{job_id}")).json()["cancel_requested_at"] is not None

    release.set()
    await asyncio.wait_for(task, 10)
    assert (await job_row(rt, job_id))["status"] == "cancelled"
    assert [s for s, _ in await statuses_logged(rt, job_id)] == ["cancel_requested", "cancelled"]


async def test_a_worker_that_missed_the_message_sees_the_request_at_its_heartbeat(
    runtime: Runtime, registry: HandlerRegistry
) -> None:
    # A short lease: heartbeats every 0.3 s. The request is written to PostgreSQL only
    # (no message published), as when the worker's subscription was down.
    rt = dataclasses.replace(
        runtime,
        settings=runtime.settings.replace(visibility_timeout=0.9, worker_fetch_timeout=0.1),
    )
    started = asyncio.Event()

    @registry.handler("t-heartbeat")
    async def long_running(job: Job) -> None:
        started.set()
        await asyncio.sleep(60)

    await add_queue(rt, "t-heartbeat")
    job_id, _worker, task = await start_running(rt, "t-heartbeat", started)
    assert await rt.cancels.request(job_id, reason="quiet", actor="key:ops") is not None
    await asyncio.wait_for(task, 10)
    assert (await job_row(rt, job_id))["status"] == "cancelled"
    assert await statuses_logged(rt, job_id) == [
        ("cancel_requested", "key:ops"),
        ("cancelled", "key:ops"),
    ]


async def test_a_cancelled_job_whose_worker_died_is_not_run_again(runtime: Runtime) -> None:
    rt = runtime
    await add_queue(rt, "t-orphan")
    job_id = await create_job(rt, "t-orphan")
    # Claimed by a worker that then died (its lease expired), after a cancel was asked.
    await rt.pool.execute(
        "UPDATE jobs SET status = 'running', worker_id = 'dead', attempt_count = 1, "
        "lease_expires_at = now() - interval '1 second' WHERE id = $1",
        job_id,
    )
    await rt.cancels.request(job_id, reason="stop it", actor="key:ops")
    (first, *_rest) = rt.maintenance().tasks
    assert isinstance(first, AbandonedCancels)  # before the lease rescue, which retries
    assert await first.run_once() == 1

    assert (await job_row(rt, job_id))["status"] == "cancelled"
    assert await statuses_logged(rt, job_id) == [
        ("cancel_requested", "key:ops"),
        ("cancelled", "key:ops"),
    ]


async def test_an_outcome_refused_for_a_cancel_the_worker_never_saw_ends_the_job_cancelled(
    runtime: Runtime, registry: HandlerRegistry
) -> None:
    """The request reaches PostgreSQL only (no message, no heartbeat yet) and the handler
    completes: the completion is refused (a cancel was asked) and the job ends cancelled,
    in PostgreSQL and in its job:<id> hash."""
    rt = runtime
    started = asyncio.Event()
    loop = asyncio.get_running_loop()
    release = threading.Event()

    @registry.handler("t-unaware")
    def unaware(job: Job) -> None:
        loop.call_soon_threadsafe(started.set)
        release.wait(30)

    await add_queue(rt, "t-unaware")
    job_id, _worker, task = await start_running(rt, "t-unaware", started)
    assert await rt.cancels.request(job_id, reason="late", actor="key:ops") is not None
    release.set()
    await asyncio.wait_for(task, 10)

    assert (await job_row(rt, job_id))["status"] == "cancelled"
    assert await statuses_logged(rt, job_id) == [
        ("cancel_requested", "key:ops"),
        ("cancelled", "key:ops"),
    ]
    assert await rt.redis.hget(rt.keys.job(str(job_id)), "status") == b"cancelled"
