"""The producer library inside the caller's own SQLAlchemy transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from app.producer import JobRejected, enqueue, enqueue_many
from app.runtime import Runtime
from app.settings import Settings
from tests.support.factories import add_queue, job_status


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(settings.sqlalchemy_url)
    try:
        yield engine
    finally:
        await engine.dispose()


class _CallerFailed(Exception):
    pass


async def count(rt: Runtime, queue: str) -> int:
    n: int = await rt.pool.fetchval("SELECT count(*) FROM jobs WHERE queue_name = $1", queue)
    return n


async def test_a_rolled_back_transaction_leaves_no_job(
    runtime: Runtime, engine: AsyncEngine
) -> None:
    rt = runtime
    await add_queue(rt, "t-prod-rb")
    with pytest.raises(_CallerFailed):
        async with AsyncSession(engine) as session, session.begin():
            job_id = await enqueue(session, "t-prod-rb", {"order": 1})
            # Visible inside the caller's transaction ...
            seen = await session.scalar(
                text("SELECT count(*) FROM jobs WHERE id = :id"), {"id": job_id}
            )
            assert seen == 1
            assert await count(rt, "t-prod-rb") == 0  # ... and nowhere else yet
            raise _CallerFailed  # the caller's own work fails: its transaction rolls back
    assert await count(rt, "t-prod-rb") == 0
    assert (await rt.migrator().move_due_jobs()).moved == 0


async def test_a_committed_job_exists_and_the_migrator_moves_it(
    runtime: Runtime, engine: AsyncEngine
) -> None:
    rt = runtime
    await add_queue(rt, "t-prod-ok", default_priority=40)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TEMP TABLE orders (id int) ON COMMIT DROP"))
        await conn.execute(text("INSERT INTO orders VALUES (1)"))
        job_id = await enqueue(conn, "t-prod-ok", {"order": 1}, max_attempts=5)
        more = await enqueue_many(
            conn,
            [
                {"queue_name": "t-prod-ok", "payload": {"order": 2}, "priority": 200},
                {"queue_name": "t-prod-ok", "payload": {"order": 3}, "idempotency_key": "o3"},
            ],
        )
    assert await job_status(rt, job_id) == "queued"
    row = await rt.pool.fetchrow(
        "SELECT priority, max_attempts, payload FROM jobs WHERE id = $1", job_id
    )
    assert row is not None
    assert (row["priority"], row["max_attempts"], row["payload"]) == (40, 5, {"order": 1})
    assert len(more) == 2

    assert (await rt.migrator().move_due_jobs()).moved == 3
    assert await rt.redis.llen(rt.keys.route("t-prod-ok", 40)) == 2
    assert await rt.redis.llen(rt.keys.route("t-prod-ok", 200)) == 1


async def test_rejected_jobs_change_nothing_and_keep_the_transaction_usable(
    runtime: Runtime, engine: AsyncEngine
) -> None:
    rt = runtime
    await add_queue(rt, "t-prod-bad")
    async with AsyncSession(engine) as session, session.begin():
        kept = await enqueue(session, "t-prod-bad", {"n": 0}, idempotency_key="k")
        with pytest.raises(JobRejected) as invalid:
            await enqueue(session, "t-prod-bad", {"n": 1}, priority=-1)
        assert invalid.value.errors[0]["loc"] == ["jobs", 0, "priority"]
        with pytest.raises(JobRejected) as unknown:
            await enqueue_many(
                session,
                [
                    {"queue_name": "t-prod-bad", "payload": {"n": 2}},
                    {"queue_name": "no-such-queue", "payload": {}},
                ],
            )
        assert unknown.value.errors == [
            {
                "loc": ["jobs", 1, "queue_name"],
                "msg": "unknown queue 'no-such-queue'",
                "type": "unknown_queue",
            }
        ]
        with pytest.raises(JobRejected) as reused:
            await enqueue(session, "t-prod-bad", {"n": 3}, idempotency_key="k")
        assert reused.value.status_code == 409
        same = await enqueue(session, "t-prod-bad", {"n": 0}, idempotency_key="k")
        assert same == kept
    # Only the first job was written; the savepoints undid the rejected calls.
    assert await count(rt, "t-prod-bad") == 1
