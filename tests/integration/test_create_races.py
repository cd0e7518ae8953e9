"""Job creation against what other sessions and a hung Redis do meanwhile: concurrent
keyed inserts never deadlock, a deadlock PostgreSQL does report is a 503 with
Retry-After (nothing written), a hung Redis does not slow creation down, and a queue
deleted meanwhile leaves no job behind."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from app.db.inserts import insert_jobs
from app.producer import MAX_PAYLOAD_BYTES, JobClient, JobRejected, _prepare
from app.runtime import Runtime
from app.settings import Settings
from tests.support.api import ServedApp, api_only, serve_app
from tests.support.factories import add_queue
from tests.support.servers import PrivateRedis

BOUND = 10.0


def keyed(key: str) -> dict[str, Any]:
    return {"queue_name": "email-sending", "payload": {"key": key}, "idempotency_key": key}


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


async def wait_for_lock_waiters(db: asyncpg.Connection, count: int) -> None:
    """Until `count` other sessions of this database wait on a lock (bounded)."""
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        waiting = await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        if waiting >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} sessions did not wait on a lock within {BOUND:g}s")


async def hold_key(database_url: str, key: str) -> asyncpg.Connection:
    """A session that inserted a job with `key` and has not committed: inserts of the
    same key wait on it."""
    conn = await asyncpg.connect(database_url)
    await conn.execute("BEGIN")
    await conn.execute(
        "INSERT INTO jobs (id, queue_name, payload, idempotency_key, request_hash) "
        "VALUES (gen_random_uuid(), 'email-sending', '{}', $1, 'other')",
        key,
    )
    return conn


async def test_keyed_inserts_in_opposite_orders_do_not_deadlock(
    client: httpx.AsyncClient, database_url: str, db: asyncpg.Connection
) -> None:
    # Both batches wait behind a third session's k1; when it rolls back, each inserts
    # k1 and k2. In the order sent ([k1, k2] and [k2, k1]) the second would hold k2
    # while waiting for k1, and the first hold k1 while waiting for k2: a deadlock.
    holder = await hold_key(database_url, "k1")
    first = asyncio.create_task(
        client.post("/jobs/batch", json={"jobs": [keyed("k1"), keyed("k2")]})
    )
    await wait_for_lock_waiters(db, 1)
    second = asyncio.create_task(
        client.post("/jobs/batch", json={"jobs": [keyed("k2"), keyed("k1")]})
    )
    await wait_for_lock_waiters(db, 2)
    await holder.execute("ROLLBACK")
    await holder.close()
    answers = await asyncio.wait_for(asyncio.gather(first, second), BOUND)

    assert sorted(a.status_code for a in answers) == [200, 201], [a.text for a in answers]
    assert await db.fetchval("SELECT count(*) FROM jobs") == 2


async def test_a_deadlock_is_a_503_with_retry_after_and_nothing_is_written(
    client: httpx.AsyncClient, database_url: str, db: asyncpg.Connection
) -> None:
    # An expired key "old": the batch frees it (locking its row), then waits on "new",
    # which another session inserted; that session then waits on the row "old".
    old_id = await db.fetchval(
        "INSERT INTO jobs (id, queue_name, payload, idempotency_key, request_hash, created_at) "
        "VALUES (gen_random_uuid(), 'email-sending', '{}', 'old', 'x', now() - interval '3 days') "
        "RETURNING id"
    )
    holder = await hold_key(database_url, "new")
    # The API's session, waiting first, runs the deadlock check first and is the victim.
    await holder.execute("SET LOCAL deadlock_timeout = '60s'")
    batch = asyncio.create_task(
        client.post("/jobs/batch", json={"jobs": [keyed("new"), keyed("old")]})
    )
    await wait_for_lock_waiters(db, 1)
    closing = asyncio.create_task(
        holder.execute("UPDATE jobs SET priority = priority WHERE id = $1", old_id)
    )
    answer = await asyncio.wait_for(batch, BOUND)
    await asyncio.wait_for(closing, BOUND)
    await holder.execute("ROLLBACK")
    await holder.close()

    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == "1"
    assert "retry" in answer.json()["detail"]
    rows = await db.fetch("SELECT idempotency_key FROM jobs")
    assert [r["idempotency_key"] for r in rows] == ["old"]  # the batch left nothing


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    with PrivateRedis() as server:
        yield server


@pytest.fixture
async def on_private_redis(
    settings: Settings, clean_db: None, private_redis: PrivateRedis
) -> AsyncIterator[ServedApp]:
    own = api_only(settings, redis_url=private_redis.url, redis_timeout=3.0)
    async with serve_app(own) as served:
        yield served


async def test_a_hung_redis_does_not_slow_job_creation(
    on_private_redis: ServedApp, private_redis: PrivateRedis
) -> None:
    client, rt = on_private_redis.client, on_private_redis.runtime
    assert private_redis.proc is not None
    os.kill(private_redis.proc.pid, signal.SIGSTOP)  # accepts, never answers
    try:
        started = time.monotonic()
        for _ in range(5):
            created = await client.post(
                "/jobs", json={"queue_name": "email-sending", "payload": {}}
            )
            assert created.status_code == 201
        batch = await client.post(
            "/jobs/batch",
            json={"jobs": [{"queue_name": "email-sending", "payload": {}}] * 3},
        )
        assert batch.status_code == 201
        # Redis's timeout is 3 s: before, the second POST /jobs and the batch each
        # waited for it.
        assert time.monotonic() - started < 2.0
    finally:
        os.kill(private_redis.proc.pid, signal.SIGCONT)

    async def counted() -> int:
        raw = await rt.redis.hget(rt.keys.metric_counter("created"), "email-sending")
        return int(raw or 0)

    deadline = time.monotonic() + BOUND
    while await counted() != 8:
        assert time.monotonic() < deadline, f"created counter is {await counted()}, not 8"
        await asyncio.sleep(0.05)


async def test_a_queue_deleted_while_its_jobs_are_inserted_leaves_no_job_behind(
    runtime: Runtime, database_url: str, db: asyncpg.Connection
) -> None:
    """Jobs have no foreign key to their queue (migration 0011): the inserts lock the
    queue row instead, and a trigger deletes a deleted queue's jobs. A deletion waits for
    an insert in progress, then deletes its jobs; inserts that waited for a deletion find
    no queue (422) and write nothing."""
    queue = "t-doomed"
    jobs = [{"queue_name": queue, "payload": {"n": n}} for n in range(100)]
    count = f"SELECT count(*) FROM jobs WHERE queue_name = '{queue}'"
    async with await JobClient.connect(database_url) as client:
        await add_queue(runtime, queue)
        inserter = await asyncpg.connect(database_url)
        try:
            async with inserter.transaction():
                await enqueue_many_on(inserter, jobs)
                deletion = asyncio.create_task(
                    runtime.pool.execute("DELETE FROM job_queues WHERE name = $1", queue)
                )
                await wait_for_lock_waiters(db, 1)
            await asyncio.wait_for(deletion, BOUND)
        finally:
            await inserter.close()
        assert await db.fetchval(count) == 0

        await add_queue(runtime, queue)
        deleter = await asyncpg.connect(database_url)
        try:
            async with deleter.transaction():
                await deleter.execute("DELETE FROM job_queues WHERE name = $1", queue)
                one = asyncio.create_task(client.enqueue(queue, {"n": 0}))
                many = asyncio.create_task(client.enqueue_many(jobs))
                await wait_for_lock_waiters(db, 2)
            for insert in (one, many):
                with pytest.raises(JobRejected) as refused:
                    await asyncio.wait_for(insert, BOUND)
                assert refused.value.errors[0]["type"] == "unknown_queue"
        finally:
            await deleter.close()
        assert await db.fetchval(count) == 0


async def enqueue_many_on(conn: asyncpg.Connection, jobs: list[dict[str, Any]]) -> None:
    """The producer's statement for these jobs, on `conn` in its transaction."""
    _validated, rows = _prepare(jobs, MAX_PAYLOAD_BYTES, None)
    results = await insert_jobs(conn.fetch, rows, key_ttl=0)
    assert [r.outcome for r in results] == ["created"] * len(jobs)
