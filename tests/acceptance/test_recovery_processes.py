"""Recovery with the real entrypoints as subprocesses:

- a poison pill (a handler that kills its worker process) among ordinary jobs: it is
  failed as "stalled N times", and every other job completes;
- a migrator stopped (SIGSTOP) between its Redis push and its commit: workers keep
  serving other jobs, and the stuck batch runs once PostgreSQL ends the idle session;
- the worker and migrator entrypoints wait for Redis and PostgreSQL at start.

The test plays the part of the process supervisor (compose, systemd): it starts a new
worker when one exits.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import asyncpg
import pytest

from tests.support.entrypoints import Launcher, Service, wait_until
from tests.support.servers import PrivateRedis, free_port

pytestmark = pytest.mark.timeout(120)

FAST_RECOVERY = {
    "VISIBILITY_TIMEOUT": "1",
    "MAINTENANCE_INTERVAL": "0.2",
    "MIGRATOR_POLL_INTERVAL": "0.5",
    "WORKER_FETCH_TIMEOUT": "0.2",
}


async def insert_jobs(
    conn: asyncpg.Connection, queue: str, n: int, payload: str = "{}"
) -> list[Any]:
    await conn.execute("INSERT INTO job_queues (name) VALUES ($1) ON CONFLICT DO NOTHING", queue)
    rows = await conn.fetch(
        "INSERT INTO jobs (queue_name, payload) "
        "SELECT $1, $3::jsonb FROM generate_series(1, $2) RETURNING id",
        queue,
        n,
        payload,
    )
    return [r["id"] for r in rows]


async def test_a_poison_pill_is_failed_and_its_neighbours_complete(
    launcher: Launcher, database_url: str
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        # The poison first: it is in the first pops, with neighbours in flight beside it.
        (poison,) = await insert_jobs(conn, "t-poison", 1, '{"poison": true}')
        ordinary = await insert_jobs(conn, "t-poison", 200)
        env = {**FAST_RECOVERY, "MAX_STALLS": "3", "STALL_REQUEUE_SPREAD": "3"}
        argv = ["app.worker", "--queues", "t-poison", "--concurrency", "8"]
        workers: dict[str, Service] = {
            name: launcher.start(name, argv, **env) for name in ("worker-a", "worker-b")
        }
        launcher.start("migrator", ["app.migrator"], **env)
        started = time.monotonic()
        deaths = 0

        async def settled() -> bool | None:
            nonlocal deaths
            for name, service in list(workers.items()):
                if service.proc.poll() is not None:  # the supervisor's part
                    assert service.proc.returncode == 1, service.log()
                    deaths += 1
                    workers[name] = launcher.start(f"{name}-{deaths}", argv, **env)
            left = await conn.fetchval(
                "SELECT count(*) FROM jobs WHERE queue_name = 't-poison' "
                "AND status NOT IN ('completed', 'failed')"
            )
            return True if left == 0 else None

        await wait_until(settled, 90, "every job to finish", interval=0.05)
        elapsed = time.monotonic() - started
        row = await conn.fetchrow("SELECT * FROM jobs WHERE id = $1", poison)
        assert row is not None
        assert row["status"] == "failed"
        assert row["last_error_message"].startswith("stalled 3 times")
        assert row["stall_count"] == 3
        statuses = await conn.fetch(
            "SELECT status, count(*) AS n, sum(stall_count) AS stalls, "
            "max(attempt_count) AS attempts FROM jobs WHERE id = ANY($1) GROUP BY status",
            ordinary,
        )
        by_status = {r["status"]: r for r in statuses}
        assert set(by_status) == {"completed"}, {k: dict(v) for k, v in by_status.items()}
        assert by_status["completed"]["n"] == 200
        assert by_status["completed"]["attempts"] == 1  # no attempt spent on a stall
        assert deaths == 3
        print(
            f"\n[poison pill] 200 jobs + 1 poison on 2 workers: poison failed after "
            f"{deaths} worker deaths; {by_status['completed']['n']} completed; neighbours' "
            f"stalls: {by_status['completed']['stalls']}; {elapsed:.1f} s"
        )
    finally:
        await conn.close()


async def test_a_migrator_stopped_between_push_and_commit_holds_nothing_back(
    launcher: Launcher, database_url: str, redis_prefix: str
) -> None:
    from app.keys import Keys
    from tests.conftest import REDIS_URL

    keys = Keys(redis_prefix)
    env = {
        **FAST_RECOVERY,
        "VISIBILITY_TIMEOUT": "3",
        "MOVE_IDLE_TIMEOUT": "2",
        "CLAIM_LOCK_TIMEOUT": "1",
    }
    conn = await asyncpg.connect(database_url)
    import redis.asyncio as aioredis

    redis = aioredis.Redis.from_url(REDIS_URL)
    try:
        batch = await insert_jobs(conn, "t-ok", 100)
        stuck = launcher.start(
            "fault-migrator",
            ["tests.support.fault_migrator", "--commit-delay", "60"],
            **env,
        )

        async def pushed_not_committed() -> bool | None:
            depth = sum([await redis.llen(k) for k in keys.queue_lists("t-ok")])
            queued = await conn.fetchval(
                "SELECT count(*) FROM jobs WHERE id = ANY($1) AND status = 'queued'", batch
            )
            return True if depth == 100 and queued == 100 else None

        await wait_until(pushed_not_committed, 30, "a pushed, uncommitted batch")
        stuck.proc.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        launcher.start("worker", ["app.worker", "--concurrency", "10"], **env)
        launcher.start("migrator", ["app.migrator"], **env)
        others = await insert_jobs(conn, "t-slow", 20, '{"seconds": 0}')

        async def done(ids: list[Any]) -> bool | None:
            n = await conn.fetchval(
                "SELECT count(*) FROM jobs WHERE id = ANY($1) AND status = 'completed'", ids
            )
            return True if n == len(ids) else None

        await wait_until(lambda: done(others), 30, "the other jobs")
        others_at = time.monotonic() - stopped_at
        await wait_until(lambda: done(batch), 30, "the stuck batch")
        batch_at = time.monotonic() - stopped_at
        # The session of the stopped migrator ends after MOVE_IDLE_TIMEOUT (2 s); then
        # the other migrator moves the batch (its poll, 0.5 s) and the worker runs it.
        assert batch_at < 2 + 3 + 5, batch_at
        logs = await conn.fetchval(
            "SELECT count(*) FROM job_logs WHERE job_id = ANY($1) AND status = 'completed'",
            batch,
        )
        assert logs == 100
        print(
            f"\n[stopped migrator] other jobs done {others_at:.1f} s after SIGSTOP; "
            f"the stuck batch of 100 done after {batch_at:.1f} s"
        )
    finally:
        await conn.close()
        await redis.aclose()


async def test_the_worker_waits_for_redis_at_start(launcher: Launcher, database_url: str) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    worker = launcher.start("worker", ["app.worker"], REDIS_URL=url, REDIS_TIMEOUT="0.5")

    async def waiting() -> bool | None:
        assert worker.proc.poll() is None, worker.log()
        return True if "unreachable" in worker.log() else None

    await wait_until(waiting, 30, "the worker to report Redis unreachable")
    server = PrivateRedis()
    server.port = port
    server.start()
    try:
        migrator = launcher.start("migrator", ["app.migrator"], REDIS_URL=url)
        conn = await asyncpg.connect(database_url)
        try:
            (job,) = await insert_jobs(conn, "t-ok", 1)

            async def completed() -> bool | None:
                status = await conn.fetchval("SELECT status FROM jobs WHERE id = $1", job)
                return True if status == "completed" else None

            await wait_until(completed, 30, "the job to run")
        finally:
            await conn.close()
        for service in (worker, migrator):
            service.sigterm()
            assert await service.exit_code(20) == 0
    finally:
        server.stop()


async def test_the_migrator_waits_for_postgres_at_start_and_stops_cleanly(
    launcher: Launcher,
) -> None:
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    migrator = launcher.start("migrator", ["app.migrator"], DATABASE_URL=unreachable)

    async def waiting() -> bool | None:
        assert migrator.proc.poll() is None, migrator.log()
        return True if migrator.log().count("unreachable") >= 2 else None

    await wait_until(waiting, 30, "the migrator to retry")
    migrator.sigterm()
    assert await migrator.exit_code(10) == 0
    await asyncio.sleep(0)
