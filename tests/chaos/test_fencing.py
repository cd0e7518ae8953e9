"""Invariant 2 with real processes: a worker paused (SIGSTOP) past its lease loses the
job to another worker, and when it resumes it cannot record an outcome over the newer
attempt."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.support.chaos import QUEUE, Cluster, wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(120)]


async def test_a_paused_worker_cannot_overwrite_the_newer_attempt(
    database_url: str, clean_db: None, tmp_path: Path, redis_prefix: str
) -> None:
    cluster = Cluster(database_url, "redis://127.0.0.1:6379/0", tmp_path, prefix=redis_prefix)
    conn = await cluster.connect()
    try:
        await cluster.create_queue()
        job_id = await conn.fetchval(
            "INSERT INTO jobs (queue_name, payload) VALUES ($1, '{\"sleep\": 1.5}') RETURNING id",
            QUEUE,
        )
        cluster.start_migrator()
        paused = cluster.start_worker("worker-paused")

        async def running_on_first_worker() -> bool:
            return bool(
                await conn.fetchval("SELECT status = 'running' FROM jobs WHERE id = $1", job_id)
            )

        await wait_until(running_on_first_worker, 30, "the first attempt to start")
        first_worker = await conn.fetchval("SELECT worker_id FROM jobs WHERE id = $1", job_id)
        os.kill(paused.pid, signal.SIGSTOP)
        cluster.fault("SIGSTOP worker-paused")
        cluster.start_worker("worker-2")

        async def completed() -> bool:
            return bool(
                await conn.fetchval("SELECT status = 'completed' FROM jobs WHERE id = $1", job_id)
            )

        await wait_until(completed, 30, "the second attempt to complete", cluster.log_tail)
        os.kill(paused.pid, signal.SIGCONT)

        async def paused_worker_discarded_its_outcome() -> bool:
            log = (cluster.logs / "worker-paused.log").read_text()
            return "outcome discarded" in log

        await wait_until(paused_worker_discarded_its_outcome, 30, "the stale outcome")
        codes = cluster.stop_all()
        assert set(codes.values()) == {0}, codes

        row = await conn.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
        assert row is not None
        assert row["status"] == "completed"
        # The stall did not spend the attempt: the second run is attempt 1 again, told
        # apart from the first by its worker and its random fencing token.
        assert row["attempt_count"] == 1
        assert row["stall_count"] == 1
        assert row["worker_id"] != first_worker
        logs = await conn.fetch(
            "SELECT attempt_number, status, worker_id, log_message FROM job_logs "
            "WHERE job_id = $1 ORDER BY finished_at",
            job_id,
        )
        assert [(r["attempt_number"], r["status"]) for r in logs] == [
            (1, "stalled"),
            (1, "completed"),
        ]
        assert logs[0]["worker_id"] == first_worker
        assert logs[0]["log_message"].startswith(
            f"lease expired: worker {first_worker} stopped responding"
        )
        assert logs[1]["worker_id"] == row["worker_id"]
        # Both attempts really ran (at least once, never lost).
        assert cluster.executions()[str(job_id)] == 2
    finally:
        await conn.close()
        cluster.stop_all()
