"""Chaos scenarios: 1,000 jobs through real processes while faults hit them. Each ends
with the same checks (Cluster.verify): every job completed in PostgreSQL with exactly one
completed job_logs row, the handler ran at least once for every job, and nothing is left
in the Redis lists. Each prints its figures (pytest -s shows them)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from app.db.setup import upgrade
from app.settings import Settings
from tests.support.chaos import QUEUE, Cluster, post_during_outage, wait_until
from tests.support.servers import PrivatePostgres, PrivateRedis, free_port

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]

N = 1000


@pytest.fixture
async def cluster(
    database_url: str, clean_db: None, tmp_path: Path, redis_prefix: str
) -> AsyncIterator[Cluster]:
    c = Cluster(database_url, "redis://127.0.0.1:6379/0", tmp_path, prefix=redis_prefix)
    yield c
    c.stop_all()
    client = aioredis.Redis.from_url(c.redis_url)
    keys = [k async for k in client.scan_iter(match=f"{c.prefix}*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    with PrivateRedis() as server:
        yield server


async def test_kill_9_a_worker_three_times(cluster: Cluster) -> None:
    ids, started = await cluster.start_jobs(N)
    for k, victim in enumerate(["worker-1", "worker-2", "worker-1"], start=1):
        await cluster.wait_completed(k * N // 5, timeout=60)
        cluster.kill9(victim)
        cluster.start_worker(victim)
    await cluster.finish(ids, started, "kill -9 worker x3")


async def test_redis_flushall_while_jobs_run(
    database_url: str, clean_db: None, tmp_path: Path, private_redis: PrivateRedis
) -> None:
    cluster = Cluster(database_url, private_redis.url, tmp_path)
    try:
        ids, started = await cluster.start_jobs(N)
        await cluster.wait_completed(N // 3, timeout=60)
        client = aioredis.Redis.from_url(private_redis.url)
        depth = await cluster.redis_depth(client)
        await client.flushall()
        await client.aclose()
        cluster.fault(f"FLUSHALL with {depth} jobs in Redis lists")
        await cluster.finish(ids, started, "FLUSHALL")
    finally:
        cluster.stop_all()


async def test_redis_server_restart_while_jobs_run(
    database_url: str, clean_db: None, tmp_path: Path, private_redis: PrivateRedis
) -> None:
    cluster = Cluster(database_url, private_redis.url, tmp_path)
    try:
        ids, started = await cluster.start_jobs(N)
        await cluster.wait_completed(N // 3, timeout=60)
        private_redis.restart()  # no persistence: it comes back empty
        cluster.fault("redis-server restart (data lost)")
        await cluster.finish(ids, started, "Redis restart")
    finally:
        cluster.stop_all()


async def test_postgres_restart_while_jobs_run(tmp_path: Path) -> None:
    with PrivatePostgres() as pg, PrivateRedis() as server:
        conn = await asyncpg.connect(pg.dsn())
        await conn.execute("CREATE DATABASE chaos")
        await conn.close()
        dsn = pg.dsn("chaos")
        await asyncio.to_thread(upgrade, Settings(database_url=dsn).sqlalchemy_url)
        cluster = Cluster(dsn, server.url, tmp_path)
        port = free_port()
        try:
            ids, started = await cluster.start_jobs(N, api_port=port)
            await cluster.wait_completed(N // 3, timeout=60)
            pg.stop("fast")
            cluster.fault("PostgreSQL restart")
            # While it is down the API answers 503 with a JSON error: never a 500, no hang.
            t0 = time.monotonic()
            codes = await post_during_outage(port)
            assert set(codes) == {503}, codes
            assert time.monotonic() - t0 < 30
            pg.start()
            await cluster.finish(ids, started, "PostgreSQL restart")
        finally:
            cluster.stop_all()


async def test_postgres_crash_with_asynchronous_commits_pending(tmp_path: Path) -> None:
    """An immediate-mode stop is a crash: no checkpoint, no WAL flush. With the WAL
    writer asleep for 10 s, the asynchronous commits (claims, moves) since the last
    synchronous one are lost; every job must still complete, once."""
    n = 400
    with PrivatePostgres({"wal_writer_delay": "10000"}) as pg, PrivateRedis() as server:
        conn = await asyncpg.connect(pg.dsn())
        await conn.execute("CREATE DATABASE chaos")
        await conn.close()
        dsn = pg.dsn("chaos")
        await asyncio.to_thread(upgrade, Settings(database_url=dsn).sqlalchemy_url)
        cluster = Cluster(dsn, server.url, tmp_path, handler_sleep=0.05)
        try:
            ids, started = await cluster.start_jobs(n)
            await cluster.wait_completed(n // 3, timeout=60)
            conn = await cluster.connect()
            lsn = await conn.fetchval(
                "SELECT pg_current_wal_insert_lsn() - pg_current_wal_flush_lsn()"
            )
            await conn.close()
            pg.stop("immediate")
            cluster.fault(f"PostgreSQL crash (immediate; {lsn} bytes of WAL not flushed)")
            pg.start()
            report = await cluster.finish(ids, started, "PostgreSQL crash")
            assert report.lost == 0
        finally:
            cluster.stop_all()


async def test_kill_9_the_migrator_in_the_middle_of_a_batch(cluster: Cluster) -> None:
    await cluster.create_queue()
    started = time.monotonic()
    ids = await cluster.create_jobs(N)
    client = aioredis.Redis.from_url(cluster.redis_url)
    conn = await cluster.connect()
    try:
        # The migrator pushes a batch, then waits before its commit: the crash window.
        # Workers start after the crash, so the pushed copies are still in Redis to see.
        cluster.start("migrator", "-m", "tests.support.fault_migrator", "--commit-delay", "30")

        async def pushed_not_committed() -> bool:
            depth = await cluster.redis_depth(client)
            queued = await conn.fetchval(
                "SELECT count(*) FROM jobs WHERE queue_name = $1 AND status = 'queued'", QUEUE
            )
            return depth > 0 and queued == N

        await wait_until(pushed_not_committed, 30, "a pushed, uncommitted batch")
        cluster.kill9("migrator")
        # The batch was never committed: PostgreSQL still has every job queued, while
        # its copies sit in Redis (the claims will drop them).
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM jobs WHERE queue_name = $1 AND status = 'queued'", QUEUE
            )
            == N
        )
        assert await cluster.redis_depth(client) > 0
        cluster.procs.pop("migrator")  # killed on purpose: not among those to stop
        cluster.start_worker("worker-1")
        cluster.start_worker("worker-2")
        cluster.start_migrator("migrator-2")
    finally:
        await conn.close()
        await client.aclose()
    await cluster.finish(ids, started, "kill -9 migrator mid-batch")
