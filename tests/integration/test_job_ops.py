"""Jobs for operators over HTTP: listing, timeline, cancel (and its race with a worker)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx

from app.registry import HandlerRegistry, Job
from app.runtime import Runtime
from tests.support.factories import add_queue, create_job, job_row, job_status, run_until_settled

T = TypeVar("T")


async def test_list_jobs_filters_by_queue_status_and_created_range_and_pages(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    rt = runtime
    await add_queue(rt, "t-list-a")
    await add_queue(rt, "t-list-b")
    base = datetime.now(UTC) - timedelta(hours=10)
    a: list[uuid.UUID] = []
    for hour in range(6):
        job_id = await create_job(rt, "t-list-a", {"hour": hour})
        await rt.pool.execute(
            "UPDATE jobs SET created_at = $2 WHERE id = $1", job_id, base + timedelta(hours=hour)
        )
        a.append(job_id)
    b = await create_job(rt, "t-list-b")
    await rt.pool.execute("UPDATE jobs SET status = 'completed' WHERE id = $1", a[2])

    everything = (await client.get("/jobs", params={"limit": 500})).json()
    assert [i["job_id"] for i in everything["items"]] == [str(b)] + [str(i) for i in reversed(a)]
    assert everything["next_cursor"] is None

    pages: list[str] = []
    cursor = None
    for _ in range(10):
        params: dict[str, str | int] = {"queue_name": "t-list-a", "limit": 4}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/jobs", params=params)).json()
        pages += [i["job_id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [str(i) for i in reversed(a)]

    done = (await client.get("/jobs", params={"status": "completed"})).json()
    assert [i["job_id"] for i in done["items"]] == [str(a[2])]
    window = (
        await client.get(
            "/jobs",
            params={
                "queue_name": "t-list-a",
                "created_from": (base + timedelta(hours=1)).isoformat(),
                "created_to": (base + timedelta(hours=4)).isoformat(),
            },
        )
    ).json()
    assert [i["job_id"] for i in window["items"]] == [str(a[3]), str(a[2]), str(a[1])]
    item = window["items"][0]
    assert item["payload"] == {"hour": 3} and item["status"] == "queued"

    bad_status = await client.get("/jobs", params={"status": "lost"})
    assert bad_status.status_code == 422
    assert bad_status.json()["detail"][0]["loc"] == ["query", "status"]
    naive = await client.get("/jobs", params={"created_from": "2026-01-01T00:00:00"})
    assert naive.status_code == 422


async def test_job_logs_are_the_attempt_timeline(
    runtime: Runtime, registry: HandlerRegistry, client: httpx.AsyncClient
) -> None:
    rt = runtime

    @registry.handler("t-timeline")
    async def flaky(job: Job) -> None:
        if job.attempt < 3:
            raise ValueError(f"attempt {job.attempt}")

    await add_queue(rt, "t-timeline")
    job_id = await create_job(rt, "t-timeline", max_attempts=3)
    await run_until_settled(rt)

    first = (await client.get(f"/jobs/{job_id}/logs", params={"limit": 2})).json()
    rest = (
        await client.get(f"/jobs/{job_id}/logs", params={"cursor": first["next_cursor"]})
    ).json()
    rows = first["items"] + rest["items"]
    assert rest["next_cursor"] is None
    assert [(r["attempt_number"], r["status"]) for r in rows] == [
        (1, "failed"),
        (2, "failed"),
        (3, "completed"),
    ]
    assert "ValueError: attempt 1" in rows[0]["log_message"]
    assert rows[2]["worker_id"] and rows[2]["actor"] is None
    assert rows[2]["duration_seconds"] >= 0

    missing = await client.get(f"/jobs/{uuid.uuid4()}/logs")
    assert (missing.status_code, missing.json()) == (404, {"detail": "job not found"})


async def test_cancel_a_queued_or_migrated_job_and_not_a_running_or_finished_one(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    rt = runtime
    await add_queue(rt, "t-cancel-api")
    queued = await create_job(rt, "t-cancel-api")
    response = await client.post(f"/jobs/{queued}/cancel", params={"reason": "customer left"})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    assert await job_status(rt, queued) == "cancelled"
    log = await rt.pool.fetchrow("SELECT * FROM job_logs WHERE job_id = $1", queued)
    assert log is not None
    assert (log["status"], log["actor"], log["log_message"], log["attempt_number"]) == (
        "cancelled",
        "anonymous",
        "customer left",
        0,
    )
    assert (await rt.redis.hget(rt.keys.job(str(queued)), "status")) == b"cancelled"
    assert 0 < await rt.redis.ttl(rt.keys.job(str(queued))) <= rt.settings.job_hash_ttl

    migrated = await create_job(rt, "t-cancel-api")
    await rt.migrator().move_due_jobs()
    assert (await client.post(f"/jobs/{migrated}/cancel")).status_code == 200
    assert await job_status(rt, migrated) == "cancelled"

    assert response.json()["outcome"] == "cancelled"

    for state in ("completed", "failed", "cancelled"):
        job_id = await create_job(rt, "t-cancel-api")
        await rt.pool.execute("UPDATE jobs SET status = $2 WHERE id = $1", job_id, state)
        refused = await client.post(f"/jobs/{job_id}/cancel")
        assert refused.status_code == 409, state
        assert refused.json()["detail"].startswith(f"job is {state}:")
        assert await job_status(rt, job_id) == state

    # Running, with no worker to stop it: the request is recorded (202), the job runs on.
    running = await create_job(rt, "t-cancel-api")
    await rt.pool.execute("UPDATE jobs SET status = 'running' WHERE id = $1", running)
    rt.settings = rt.settings.replace(cancel_wait=0.1)
    requested = await client.post(f"/jobs/{running}/cancel")
    assert requested.status_code == 202, requested.text
    assert (requested.json()["status"], requested.json()["outcome"]) == ("running", "requested")
    assert (await job_row(rt, running))["cancel_requested_at"] is not None
    assert (await client.post(f"/jobs/{uuid.uuid4()}/cancel")).status_code == 404


async def test_cancel_racing_a_worker_claim_has_exactly_one_winner(
    runtime: Runtime, registry: HandlerRegistry, client: httpx.AsyncClient
) -> None:
    """Invariant 1 for cancel: either the job is cancelled before its claim and its
    handler never ran; or the claim won and the cancel stopped it while it ran (it ends
    cancelled, never completed); or it had completed and the cancel answered 409."""
    rt = runtime
    ran: set[uuid.UUID] = set()

    @registry.handler("t-race")
    async def record(job: Job) -> None:
        ran.add(job.id)

    await add_queue(rt, "t-race")
    outcomes = {"cancel won": 0, "worker won": 0, "stopped": 0}
    for i in range(40):
        job_id = await create_job(rt, "t-race")
        assert (await rt.migrator().move_due_jobs()).moved == 1
        # The cancel request starts 0-4 ms before or after the worker, so the runs cover
        # both orders and the close calls between them; the assertions hold for any order.
        worker = rt.worker(burst=True)
        offset = ((i % 9) - 4) * 0.0005
        cancel, _ = await asyncio.gather(
            _after(max(0.0, offset), client.post(f"/jobs/{job_id}/cancel")),
            _after(max(0.0, -offset), worker.run()),
        )
        row = await job_row(rt, job_id)
        logs = await rt.pool.fetch(
            "SELECT status FROM job_logs WHERE job_id = $1 ORDER BY created_at", job_id
        )
        statuses = [r["status"] for r in logs]
        if cancel.status_code == 409:
            assert (row["status"], statuses) == ("completed", ["completed"]), cancel.text
            assert job_id in ran
            outcomes["worker won"] += 1
        elif cancel.json()["outcome"] == "cancelled":
            assert (row["status"], statuses) == ("cancelled", ["cancelled"])
            assert job_id not in ran, "a cancelled job ran"
            outcomes["cancel won"] += 1
        else:
            # Asked while it ran: stopped (200) or still to be stopped (202) when the
            # answer was given; either way the worker's outcome was discarded.
            assert cancel.status_code in (200, 202), cancel.text
            assert (row["status"], statuses) == ("cancelled", ["cancel_requested", "cancelled"])
            outcomes["stopped"] += 1
    assert sum(outcomes.values()) == 40


async def test_cancel_after_the_claim_is_a_409_and_before_it_the_job_never_runs(
    runtime: Runtime, registry: HandlerRegistry, client: httpx.AsyncClient
) -> None:
    """Both orders of the race above, forced: whichever acts first wins."""
    rt = runtime
    ran: set[uuid.UUID] = set()

    @registry.handler("t-order")
    async def record(job: Job) -> None:
        ran.add(job.id)

    await add_queue(rt, "t-order")
    worker_first = await create_job(rt, "t-order")
    await rt.migrator().move_due_jobs()
    await rt.worker(burst=True).run()
    assert (await client.post(f"/jobs/{worker_first}/cancel")).status_code == 409
    assert worker_first in ran

    cancel_first = await create_job(rt, "t-order")
    await rt.migrator().move_due_jobs()
    assert (await client.post(f"/jobs/{cancel_first}/cancel")).status_code == 200
    await rt.worker(burst=True).run()  # pops the copy; its claim fails; it is dropped
    assert cancel_first not in ran
    assert await job_status(rt, cancel_first) == "cancelled"
    assert sum([await rt.redis.llen(k) for k in rt.keys.queue_lists("t-order")]) == 0


async def _after(delay: float, work: Coroutine[Any, Any, T]) -> T:
    await asyncio.sleep(delay)
    return await work
