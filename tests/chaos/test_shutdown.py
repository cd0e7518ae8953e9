"""SIGTERM to a worker process with a job that outlasts the grace period: the process
exits 0 and the job is handed back to queued without spending its attempt."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.support.chaos import QUEUE, Cluster, wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(60)]


async def test_sigterm_hands_back_a_job_that_does_not_finish_in_the_grace_period(
    database_url: str, clean_db: None, tmp_path: Path, redis_prefix: str
) -> None:
    cluster = Cluster(database_url, "redis://127.0.0.1:6379/0", tmp_path, prefix=redis_prefix)
    conn = await cluster.connect()
    try:
        await cluster.create_queue()
        job_id = await conn.fetchval(
            "INSERT INTO jobs (queue_name, payload) VALUES ($1, '{\"sleep\": 60}') RETURNING id",
            QUEUE,
        )
        cluster.start_migrator()
        worker = cluster.start_worker("worker", SHUTDOWN_GRACE_PERIOD="0.5")

        async def running() -> bool:
            return bool(
                await conn.fetchval("SELECT status = 'running' FROM jobs WHERE id = $1", job_id)
            )

        await wait_until(running, 30, "the job to start")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(20) == 0

        row = await conn.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
        assert row is not None
        # Queued again (and, with the migrator running, possibly already back in Redis).
        assert row["status"] in ("queued", "migrated_to_redis")
        assert row["attempt_count"] == 0
        log = await conn.fetchrow("SELECT * FROM job_logs WHERE job_id = $1", job_id)
        assert log is not None
        assert log["status"] == "interrupted"
        assert log["attempt_number"] == 1
    finally:
        await conn.close()
        cluster.stop_all()
