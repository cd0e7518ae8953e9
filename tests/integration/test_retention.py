"""Retention on real PostgreSQL: old terminal jobs go with their logs, recent ones stay."""

from __future__ import annotations

import time
import uuid

from app.db.retention import DELETE_OLD_JOBS
from app.maintenance.retention import Retention
from app.runtime import Runtime
from app.settings import Settings
from tests.support.factories import add_queue, create_job


async def aged(rt: Runtime, status: str, days: float) -> uuid.UUID:
    """A job in `status` whose last change was `days` ago, with one log row."""
    job_id = await create_job(rt, "t-retention")
    await rt.pool.execute(
        "UPDATE jobs SET status = $2, updated_at = now() - make_interval(secs => $3) WHERE id = $1",
        job_id,
        status,
        days * 86_400,
    )
    await rt.pool.execute(
        "INSERT INTO job_logs (job_id, status, attempt_number) VALUES ($1, $2, 1)",
        job_id,
        status,
    )
    return job_id


async def test_old_terminal_jobs_and_their_logs_go_recent_ones_stay(
    runtime: Runtime, settings: Settings
) -> None:
    rt = runtime
    settings.retention_batch_size = 3  # several batches per pass
    await add_queue(rt, "t-retention")
    gone = [
        *[await aged(rt, "completed", 8) for _ in range(4)],
        await aged(rt, "cancelled", 7.5),
        await aged(rt, "failed", 31),
        await aged(rt, "discarded", 40),
    ]
    kept = [
        await aged(rt, "completed", 6),
        await aged(rt, "cancelled", 1),
        await aged(rt, "failed", 20),  # failed ones are kept longer
        await aged(rt, "discarded", 29),
        await aged(rt, "queued", 100),  # never deleted while not terminal
        await aged(rt, "running", 100),
        await aged(rt, "migrated_to_redis", 100),
    ]
    await rt.redis.zadd(rt.keys.workers_index(), {"gone-worker": time.time() - 2 * 86_400})
    await rt.redis.zadd(rt.keys.workers_index(), {"live-worker": time.time()})
    (retention,) = [t for t in rt.maintenance().tasks if isinstance(t, Retention)]

    assert await retention.run_once() == len(gone)

    remaining = {r["id"] for r in await rt.pool.fetch("SELECT id FROM jobs")}
    assert remaining == set(kept)
    logged = {r["job_id"] for r in await rt.pool.fetch("SELECT job_id FROM job_logs")}
    assert logged == set(kept)
    assert await rt.redis.zrange(rt.keys.workers_index(), 0, -1) == [b"live-worker"]
    assert await retention.run_once() == 0


async def test_the_retention_delete_can_use_an_index(runtime: Runtime) -> None:
    """The batch delete can find its rows through an index, not a full scan of jobs."""
    rt = runtime
    async with rt.pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in await conn.fetch(
                "EXPLAIN " + DELETE_OLD_JOBS,
                ["completed", "cancelled"],
                604_800.0,
                1000,
            )
        )
    assert "idx_jobs_finished" in plan, plan
