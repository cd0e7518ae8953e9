"""JobClient: the producer with a pool of its own, each call committed when it returns."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.db.inserts import PIPELINE_CHUNK
from app.producer import JobClient, JobRejected
from app.runtime import Runtime
from app.settings import Settings
from tests.support.factories import add_queue


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[JobClient]:
    async with await JobClient.connect(settings.database_url) as client:
        yield client


async def test_a_job_is_committed_when_enqueue_returns(runtime: Runtime, client: JobClient) -> None:
    rt = runtime
    await add_queue(rt, "t-client", default_priority=40)
    job_id = await client.enqueue("t-client", {"to": "a@example.com"})
    # Read from another connection: the job is durable, not waiting for a commit.
    row = await rt.pool.fetchrow("SELECT status, priority, payload FROM jobs WHERE id = $1", job_id)
    assert row is not None
    assert (row["status"], row["priority"], row["payload"]) == (
        "queued",
        40,
        {"to": "a@example.com"},
    )
    ids = await client.enqueue_many(
        [
            {"queue_name": "t-client", "payload": {"n": 1}, "priority": 7},
            {"queue_name": "t-client", "payload": {"n": 2}},
        ]
    )
    rows = await rt.pool.fetch(
        "SELECT id, priority FROM jobs WHERE id = ANY($1::uuid[])", [job_id, *ids]
    )
    assert {r["id"]: r["priority"] for r in rows} == {job_id: 40, ids[0]: 7, ids[1]: 40}
    assert (await rt.migrator().move_due_jobs()).moved == 3


async def test_rejected_calls_insert_nothing(runtime: Runtime, client: JobClient) -> None:
    rt = runtime
    await add_queue(rt, "t-client-bad")
    with pytest.raises(JobRejected) as unknown:
        await client.enqueue("no-such-queue", {})
    assert (unknown.value.status_code, unknown.value.errors) == (
        422,
        [
            {
                "loc": ["jobs", 0, "queue_name"],
                "msg": "unknown queue 'no-such-queue'",
                "type": "unknown_queue",
            }
        ],
    )
    with pytest.raises(JobRejected) as invalid:
        await client.enqueue("t-client-bad", {}, max_attempts=0)
    assert invalid.value.errors[0]["loc"] == ["jobs", 0, "max_attempts"]
    # All or none: a good job beside an unknown queue is not inserted either.
    with pytest.raises(JobRejected) as partly:
        await client.enqueue_many(
            [
                {"queue_name": "t-client-bad", "payload": {"n": 1}},
                {"queue_name": "nowhere", "payload": {}},
            ]
        )
    assert partly.value.errors[0]["loc"] == ["jobs", 1, "queue_name"]
    assert await rt.pool.fetchval("SELECT count(*) FROM jobs") == 0


async def test_idempotency_keys(runtime: Runtime, client: JobClient) -> None:
    rt = runtime
    await add_queue(rt, "t-client-key")
    first = await client.enqueue("t-client-key", {"n": 1}, idempotency_key="order-1")
    assert await client.enqueue("t-client-key", {"n": 1}, idempotency_key="order-1") == first
    with pytest.raises(JobRejected) as reused:
        await client.enqueue("t-client-key", {"n": 2}, idempotency_key="order-1")
    assert reused.value.status_code == 409
    assert await rt.pool.fetchval("SELECT count(*) FROM jobs") == 1


async def test_concurrent_calls_each_get_their_own_job(runtime: Runtime, client: JobClient) -> None:
    rt = runtime
    await add_queue(rt, "t-client-many")
    ids = await asyncio.gather(*(client.enqueue("t-client-many", {"n": i}) for i in range(40)))
    assert len(set(ids)) == 40
    payloads = await rt.pool.fetch(
        "SELECT id, payload FROM jobs WHERE id = ANY($1::uuid[])", list(ids)
    )
    assert {r["id"]: r["payload"]["n"] for r in payloads} == {job: i for i, job in enumerate(ids)}


async def test_pooled_connections_carry_no_session_state(runtime: Runtime) -> None:
    """The pools skip asyncpg's reset query on release (app.db.pool._keep_session): no
    statement of ours may leave a setting or a transaction behind on a connection."""
    rt = runtime
    await add_queue(rt, "t-client-state")
    await JobClient(rt.pool).enqueue("t-client-state", {})
    await rt.migrator().move_due_jobs()  # SET LOCAL synchronous_commit off, in SQL
    (job_id,) = [r["id"] for r in await rt.pool.fetch("SELECT id FROM jobs")]
    await rt.store.claim([job_id], "w-state", 30)  # the same, for the claim
    with pytest.raises(JobRejected):  # a failed call on a pooled connection
        await JobClient(rt.pool).enqueue("t-client-state", {}, priority=-1)
    with pytest.raises(ZeroDivisionError):
        async with rt.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT 1")
            raise ZeroDivisionError  # a transaction left by an exception
    size = rt.pool.get_size()
    conns = [await rt.pool.acquire() for _ in range(size)]  # every open connection
    try:
        for conn in conns:
            assert await conn.fetchval("SHOW synchronous_commit") == "on"
            assert not conn.is_in_transaction()  # as the server's ReadyForQuery says
            assert await conn.fetch("SELECT pg_listening_channels()") == []
    finally:
        for conn in conns:
            await rt.pool.release(conn)


async def test_a_large_batch_inserted_while_it_is_validated_is_still_all_or_none(
    runtime: Runtime, client: JobClient
) -> None:
    """A batch of several chunks (PIPELINE_CHUNK) is inserted one chunk at a time while
    the next is validated: a bad job in its last chunk, or an unknown queue in its first,
    still leaves no job, and the errors name the jobs by their place in the whole batch."""
    rt = runtime
    await add_queue(rt, "t-client-big")
    n = 2 * PIPELINE_CHUNK + 500
    jobs: list[dict[str, Any]] = [
        {"queue_name": "t-client-big", "payload": {"n": i}} for i in range(n)
    ]
    assert client._inserts.pipelines(n)  # the path under test

    bad = [*jobs[: n - 2], {**jobs[n - 2], "max_attempts": 0}, {**jobs[n - 1], "payload": []}]
    with pytest.raises(JobRejected) as invalid:
        await client.enqueue_many(bad)
    assert invalid.value.status_code == 422
    assert [e["loc"][:3] for e in invalid.value.errors] == [
        ["jobs", n - 2, "max_attempts"],
        ["jobs", n - 1, "payload"],
    ]
    unknown = [*jobs[:10], {"queue_name": "nowhere", "payload": {}}, *jobs[11:]]
    with pytest.raises(JobRejected) as refused:
        await client.enqueue_many(unknown)
    assert [e["loc"] for e in refused.value.errors] == [["jobs", 10, "queue_name"]]
    assert await rt.pool.fetchval("SELECT count(*) FROM jobs") == 0

    ids = await client.enqueue_many(jobs)
    rows = await rt.pool.fetch("SELECT id, payload FROM jobs")
    assert {r["id"]: r["payload"]["n"] for r in rows} == {job: i for i, job in enumerate(ids)}


async def test_enqueue_many_pauses_the_collector_for_the_call_and_restores_it(
    runtime: Runtime, client: JobClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a batch makes lives until the call returns: the cyclic collector is off for
    the call, inserts included, and on again after it, whether the call succeeded or
    was refused; a caller that turned it off finds it off. A single job's call leaves
    it alone."""
    await add_queue(runtime, "t-client-gc")
    seen: list[bool] = []
    insert_jobs = client._inserts.insert_jobs

    async def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(gc.isenabled())
        return await insert_jobs(*args, **kwargs)

    monkeypatch.setattr(client._inserts, "insert_jobs", spy)
    jobs = [{"queue_name": "t-client-gc", "payload": {"n": i}} for i in range(3)]
    assert gc.isenabled()
    assert len(await client.enqueue_many(jobs)) == 3
    assert (seen, gc.isenabled()) == ([False], True)
    with pytest.raises(JobRejected):
        await client.enqueue_many([*jobs, {"queue_name": "nowhere", "payload": {}}])
    assert (seen, gc.isenabled()) == ([False, False], True)
    await client.enqueue("t-client-gc", {"n": 3})
    assert (seen, gc.isenabled()) == ([False, False, True], True)
    gc.disable()
    try:
        await client.enqueue_many(jobs)
        assert not gc.isenabled()
    finally:
        gc.enable()
