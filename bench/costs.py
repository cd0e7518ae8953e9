"""Scenario `costs`: what one job costs PostgreSQL and Redis, measured, for the README's
"Scaling past one machine" section.

N jobs are enqueued one by one with JobClient (a commit each), then drained by the
workers and a migrator (`drain_once`). For each phase: PostgreSQL CPU ms (the bench
database's backends plus the shared background processes), WAL bytes (pg_current_wal_lsn)
and write transactions (transaction ids handed out): the last two are the whole server's,
so run it on a quiet machine; Redis CPU ms and commands (INFO of a private redis-server
the scenario starts, so no other client is counted); the service's own CPU ms. All per
job.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis

from bench.env import CpuMeter, free_port, log, reset_jobs
from bench.handlers import QUEUE
from bench.scenarios import Ctx, drain_once, prepare_backlog


@contextlib.asynccontextmanager
async def private_redis() -> AsyncIterator[tuple[str, aioredis.Redis]]:
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="hq-bench-redis-")
    proc = await asyncio.create_subprocess_exec(
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", workdir, "--maxmemory-policy", "noeviction",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = aioredis.Redis.from_url(url)
    try:
        for _ in range(100):
            with contextlib.suppress(OSError, aioredis.ConnectionError):
                await client.ping()
                break
            await asyncio.sleep(0.05)
        yield url, client
    finally:
        await client.aclose()
        proc.kill()
        await proc.wait()


async def _snapshot(ctx: Ctx, redis: aioredis.Redis) -> dict[str, float]:
    async with ctx.conn() as conn:
        # Write transactions: the transaction ids handed out (the whole server's, like
        # the WAL; pg_stat_database's counters lag by up to 10 s in idle backends).
        row = await conn.fetchrow(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8 AS wal, "
            "pg_snapshot_xmax(pg_current_snapshot())::text::float8 AS xacts"
        )
    assert row is not None
    info = await redis.info("all")
    calls = sum(v["calls"] for k, v in info.items() if k.startswith("cmdstat_"))
    return {
        "wal_bytes": float(row["wal"]),
        "pg_write_xacts": float(row["xacts"]),
        "redis_cpu_s": float(info["used_cpu_sys"]) + float(info["used_cpu_user"]),
        "redis_commands": float(calls),
    }


def _per_job(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    return {k: (after[k] - before[k]) / n for k in before}


async def costs(ctx: Ctx) -> None:
    n = ctx.opts.jobs
    ctx.results.note("costs", f"{n} jobs: enqueue one by one (JobClient), then drain; per job")
    shared = ctx.redis
    async with private_redis() as (url, redis):
        ctx.env.overrides["REDIS_URL"] = url  # the services' Redis ...
        ctx.redis = redis  # ... and the bench's, for readiness and clean-up
        try:
            figures = await _measure(ctx, redis, n)
        finally:
            ctx.env.overrides.pop("REDIS_URL", None)
            ctx.redis = shared
    for phase, values in figures.items():
        for name, value in values.items():
            ctx.results.metric("costs", f"{phase}: {name}", "per job").values.append(value)
    ctx.results.details["costs"] = figures


async def _measure(ctx: Ctx, redis: aioredis.Redis, n: int) -> dict[str, dict[str, Any]]:
    async with ctx.conn() as conn:
        await reset_jobs(conn)
    await ctx.settle()
    log(f"costs: enqueue {n} jobs one by one")
    meter = CpuMeter(ctx.env.db_name, [])
    before = await _snapshot(ctx, redis)
    meter.start()
    for job in ctx.jobs(n):
        await ctx.producer.client.enqueue(QUEUE, job.payload)
    meter.stop()
    after = await _snapshot(ctx, redis)
    enqueue = _per_job(before, after, n)
    enqueue["pg_cpu_ms"] = 1000 * _pg_seconds(meter.seconds) / n
    enqueue["producer_cpu_ms"] = 1000 * meter.seconds.get("bench", 0.0) / n

    log(f"costs: drain {n} jobs")
    ids = await prepare_backlog(ctx, truncate=True)
    before = await _snapshot(ctx, redis)
    run = await drain_once(ctx, ids, "costs", profile=False)
    after = await _snapshot(ctx, redis)
    drain = _per_job(before, after, n)
    drain["pg_cpu_ms"] = 1000 * _pg_seconds(run.cpu_seconds) / n
    drain["service_cpu_ms"] = (
        1000 * sum(v for k, v in run.cpu_seconds.items() if k in ("worker", "migrator")) / n
    )
    ctx.results.note("costs", f"drain rate while measured: {run.rate:,.0f} jobs/s")
    for phase in (enqueue, drain):
        phase["redis_cpu_ms"] = 1000 * phase.pop("redis_cpu_s")
    return {"enqueue": enqueue, "drain": drain}


def _pg_seconds(seconds: dict[str, float]) -> float:
    return seconds.get("postgres", 0.0) + seconds.get("postgres-shared", 0.0)
