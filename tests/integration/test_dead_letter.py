"""Dead letters over HTTP on real PostgreSQL and Redis: list, replay one, replay many,
discard."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx

from app.job_state import NON_TERMINAL_TTL
from app.registry import HandlerRegistry, Job
from app.runtime import Runtime
from tests.support.factories import (
    add_queue,
    create_job,
    job_row,
    job_status,
    make_failed,
    run_until_settled,
)


async def log_rows(rt: Runtime, job_id: uuid.UUID) -> list[tuple[str, int, str | None]]:
    rows = await rt.pool.fetch(
        "SELECT status, attempt_number, actor FROM job_logs WHERE job_id = $1 "
        "ORDER BY created_at, id",
        job_id,
    )
    return [(r["status"], r["attempt_number"], r["actor"]) for r in rows]


async def test_replay_by_id_moves_that_job_and_no_other(
    runtime: Runtime, registry: HandlerRegistry, client: httpx.AsyncClient
) -> None:
    """The seed's replayDeadLetterJob popped whichever job was first; ours moves the one
    asked for, resets it, and keeps its history."""
    rt = runtime
    healthy: set[uuid.UUID] = set()
    runs: list[tuple[uuid.UUID, int]] = []

    @registry.handler("t-dlq")
    async def fragile(job: Job) -> None:
        runs.append((job.id, job.attempt))
        if job.id not in healthy:
            raise RuntimeError("mailbox unavailable")

    await add_queue(rt, "t-dlq")
    ids = [await create_job(rt, "t-dlq", {"n": n}, max_attempts=2) for n in range(6)]
    await run_until_settled(rt)
    assert {await job_status(rt, i) for i in ids} == {"failed"}
    before = {i: dict(await job_row(rt, i)) for i in ids}

    chosen = ids[3]  # neither the oldest nor the newest failure
    healthy.add(chosen)
    response = await client.post(f"/dead-letter/{chosen}/replay", params={"reason": "fixed"})

    assert response.status_code == 200, response.text
    assert response.json() == {
        "job_id": str(chosen),
        "queue_name": "t-dlq",
        "status": "queued",
        "attempt_count": 0,
    }
    row = await job_row(rt, chosen)
    assert (row["status"], row["attempt_count"]) == ("queued", 0)
    assert row["last_error_message"] is None and row["failed_at"] is None
    assert row["run_at"] >= before[chosen]["failed_at"]
    for other in ids:
        if other != chosen:
            assert dict(await job_row(rt, other)) == before[other], "another job moved"
    # Nothing was pushed to Redis by the API: the migrator routes the replayed job.
    assert sum([await rt.redis.llen(k) for k in rt.keys.queue_lists("t-dlq")]) == 0
    state = await rt.redis.hgetall(rt.keys.job(str(chosen)))
    assert (state[b"status"], state[b"attempt_count"], state[b"last_error"]) == (
        b"queued",
        b"0",
        b"",
    )
    assert await rt.redis.ttl(rt.keys.job(str(chosen))) > rt.settings.job_hash_ttl

    runs.clear()
    await run_until_settled(rt)
    assert runs == [(chosen, 1)]
    assert await job_status(rt, chosen) == "completed"
    assert await log_rows(rt, chosen) == [
        ("failed", 1, None),
        ("failed", 2, None),
        ("replayed", 2, "anonymous"),
        ("completed", 1, None),
    ]
    reason = await rt.pool.fetchval(
        "SELECT log_message FROM job_logs WHERE job_id = $1 AND status = 'replayed'", chosen
    )
    assert reason == "fixed"
    assert {await job_status(rt, i) for i in ids if i != chosen} == {"failed"}


async def test_replay_answers_404_for_an_unknown_job_and_409_unless_failed(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    rt = runtime
    await add_queue(rt, "t-dlq409")
    queued = await create_job(rt, "t-dlq409")

    missing = await client.post(f"/dead-letter/{uuid.uuid4()}/replay")
    assert (missing.status_code, missing.json()) == (404, {"detail": "job not found"})
    conflict = await client.post(f"/dead-letter/{queued}/replay")
    assert conflict.status_code == 409
    assert conflict.json() == {"detail": "job is queued: only a failed job can be replayed"}
    assert await job_status(rt, queued) == "queued"
    assert await log_rows(rt, queued) == []
    bad = await client.post("/dead-letter/not-a-uuid/replay")
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["path", "job_id"]


async def test_list_dead_letters_newest_first_with_filters_and_pages(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    rt = runtime
    await add_queue(rt, "t-dl-a")
    await add_queue(rt, "t-dl-b")
    now = datetime.now(UTC)
    a = [await make_failed(rt, "t-dl-a", failed_at=now - timedelta(hours=h)) for h in range(5)]
    b = await make_failed(rt, "t-dl-b", failed_at=now)
    await create_job(rt, "t-dl-a")  # queued: not a dead letter

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"queue_name": "t-dl-a", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/dead-letter", params=params)).json()
        assert len(page["items"]) <= 2
        seen += [item["job_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [str(i) for i in a]  # newest failure first, every one exactly once

    since = (now - timedelta(hours=2, minutes=30)).isoformat()
    recent = (await client.get("/dead-letter", params={"failed_since": since})).json()
    assert {i["job_id"] for i in recent["items"]} == {str(a[0]), str(a[1]), str(a[2]), str(b)}
    item = recent["items"][0]
    assert item["status"] == "failed" and item["last_error_message"] == "boom"

    bad = await client.get("/dead-letter", params={"cursor": "not a cursor"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["query", "cursor"]
    too_many = await client.get("/dead-letter", params={"limit": 501})
    assert too_many.status_code == 422
    assert too_many.json()["detail"][0]["loc"] == ["query", "limit"]


async def test_bulk_replay_by_queue_and_failed_since_answers_how_many(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    rt = runtime
    await add_queue(rt, "t-bulk")
    await add_queue(rt, "t-bulk-other")
    now = datetime.now(UTC)
    old = await make_failed(rt, "t-bulk", failed_at=now - timedelta(days=2))
    recent = [
        await make_failed(rt, "t-bulk", failed_at=now - timedelta(minutes=m)) for m in range(3)
    ]
    other = await make_failed(rt, "t-bulk-other", failed_at=now)

    response = await client.post(
        "/dead-letter/replay",
        json={"queue_name": "t-bulk", "failed_since": (now - timedelta(hours=1)).isoformat()},
    )
    assert (response.status_code, response.json()) == (200, {"replayed": 3})
    assert [await job_status(rt, i) for i in recent] == ["queued"] * 3
    assert await job_status(rt, old) == "failed"
    assert await job_status(rt, other) == "failed"
    assert await log_rows(rt, recent[0]) == [("replayed", 3, "anonymous")]

    everything = await client.post("/dead-letter/replay", json={"queue_name": "t-bulk"})
    assert everything.json() == {"replayed": 1}
    assert await job_status(rt, old) == "queued"
    unknown_field = await client.post("/dead-letter/replay", json={"queue": "t-bulk"})
    assert unknown_field.status_code == 422


async def test_discard_keeps_the_job_as_discarded(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    rt = runtime
    await add_queue(rt, "t-discard")
    dead = await make_failed(rt, "t-discard")
    queued = await create_job(rt, "t-discard")

    response = await client.delete(f"/dead-letter/{dead}", params={"reason": "obsolete"})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "discarded"
    row = await job_row(rt, dead)
    assert row["status"] == "discarded"
    assert row["last_error_message"] == "boom"  # kept for the record
    assert await log_rows(rt, dead) == [("discarded", 3, "anonymous")]
    assert (await rt.redis.hget(rt.keys.job(str(dead)), "status")) == b"discarded"
    assert 0 < await rt.redis.ttl(rt.keys.job(str(dead))) <= rt.settings.job_hash_ttl
    assert rt.settings.job_hash_ttl < NON_TERMINAL_TTL
    # Not a dead letter any more: not listed, not replayable, not discardable twice.
    listed = (await client.get("/dead-letter", params={"queue_name": "t-discard"})).json()
    assert listed["items"] == []
    assert (await client.post(f"/dead-letter/{dead}/replay")).status_code == 409
    assert (await client.delete(f"/dead-letter/{dead}")).status_code == 409
    assert (await client.delete(f"/dead-letter/{queued}")).status_code == 409
    assert (await client.delete(f"/dead-letter/{uuid.uuid4()}")).status_code == 404
