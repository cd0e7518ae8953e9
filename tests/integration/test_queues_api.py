"""Queues over HTTP: list with counts, depths and ages; create; pause and resume."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from app.runtime import Runtime
from tests.support.factories import add_queue, create_job, job_status


async def queue_item(client: httpx.AsyncClient, name: str) -> dict[str, object]:
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 500}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/queues", params=params)).json()
        for item in page["items"]:
            if item["name"] == name:
                item_: dict[str, object] = item
                return item_
        cursor = page["next_cursor"]
        if cursor is None:
            raise AssertionError(f"queue {name} not listed")


async def test_list_queues_with_counts_redis_depths_and_oldest_due_age(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    rt = runtime
    await add_queue(rt, "t-q-stats", default_priority=80)
    now = datetime.now(UTC)
    high = await create_job(rt, "t-q-stats", priority=10)
    await create_job(rt, "t-q-stats", priority=500)
    await rt.migrator().move_due_jobs()
    overdue = await create_job(rt, "t-q-stats")
    await rt.pool.execute(
        "UPDATE jobs SET status = 'queued', run_at = $2 WHERE id = $1",
        overdue,
        now - timedelta(minutes=5),
    )
    await create_job(rt, "t-q-stats", run_at=now + timedelta(hours=1))  # not due
    await rt.pool.execute("UPDATE jobs SET status = 'completed' WHERE id = $1", high)

    item = await queue_item(client, "t-q-stats")

    assert item["default_priority"] == 80 and item["is_active"] is True
    assert item["counts"] == {"queued": 1, "scheduled": 1, "migrated_to_redis": 1, "completed": 1}
    assert item["counts_exact"] is True
    # The completed job's copy is still in Redis until a worker pops and drops it.
    assert item["redis_depth"] == {"high": 1, "normal": 0, "low": 1}
    assert item["oldest_due_age_seconds"] == pytest.approx(300, abs=30)

    empty = await queue_item(client, "email-sending")
    assert empty["counts"] == {} and empty["oldest_due_age_seconds"] is None

    page = (await client.get("/queues", params={"limit": 2})).json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    second = (
        await client.get("/queues", params={"limit": 2, "cursor": page["next_cursor"]})
    ).json()
    assert second["items"][0]["name"] > page["items"][1]["name"]


async def test_create_a_queue(runtime: Runtime, client: httpx.AsyncClient) -> None:
    created = await client.post("/queues", json={"name": "t-q-new", "default_priority": 30})
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "t-q-new" and created.json()["default_priority"] == 30
    job = await client.post("/jobs", json={"queue_name": "t-q-new", "payload": {}})
    assert job.json()["priority"] == 30

    again = await client.post("/queues", json={"name": "t-q-new"})
    assert (again.status_code, again.json()) == (409, {"detail": "queue 't-q-new' exists"})
    spaced = await client.post("/queues", json={"name": "t-q bad"})
    assert spaced.status_code == 422
    assert spaced.json()["detail"][0]["loc"] == ["body", "name"]


async def test_a_paused_queue_accepts_jobs_but_the_migrator_moves_none(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    rt = runtime
    await add_queue(rt, "t-q-pause")
    paused = await client.patch("/queues/t-q-pause", json={"is_active": False})
    assert paused.status_code == 200 and paused.json()["is_active"] is False

    accepted = await client.post("/jobs", json={"queue_name": "t-q-pause", "payload": {}})
    assert accepted.status_code == 201
    job_id = accepted.json()["job_id"]
    assert (await rt.migrator().move_due_jobs()).moved == 0
    assert await job_status(rt, job_id) == "queued"

    resumed = await client.patch(
        "/queues/t-q-pause", json={"is_active": True, "default_priority": 7}
    )
    assert resumed.json() == {**resumed.json(), "is_active": True, "default_priority": 7}
    assert (await rt.migrator().move_due_jobs()).moved == 1
    assert await job_status(rt, job_id) == "migrated_to_redis"

    assert (await client.patch("/queues/nope", json={"is_active": True})).status_code == 404
    empty = await client.patch("/queues/t-q-pause", json={})
    assert empty.status_code == 422
    assert (await client.patch("/queues/t-q-pause", json={"paused": True})).status_code == 422
