"""The `backlog` scenario: a table with a blocked backlog (issue 12, item 1).

1,000,000 due jobs in a paused queue, 200,000 due jobs in a queue whose Redis lists are
full, 1,000,000 jobs of the served queue due tomorrow at an urgent priority (the hard
case for an index ordered by priority), and the served queue itself. Measured: the
served queue's drain against the same drain on an empty table, PostgreSQL's CPU while
nothing can move (from /proc), the time of one migrator pass, and the plans of the
migrator's statements on that table. `--backlog-scale` scales the three backlogs.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time

import asyncpg

from app.db import hot as sql
from app.db.hot import JobStore
from app.keys import Keys
from app.migrator.mover import Migrator
from app.settings import Settings
from bench.env import CpuMeter, log, reset_jobs, sql_payload, start_service, stop_all
from bench.handlers import QUEUE
from bench.report import percentile
from bench.scenarios import (
    Ctx,
    _explain_ms,
    _record_drain,
    _wait_ready,
    drain_once,
    empty_table_drain,
    prepare_backlog,
)

PAUSED = "bench-paused"
FULL = "bench-full"
PAUSED_ROWS = 1_000_000
FULL_ROWS = 200_000
TOMORROW_ROWS = 1_000_000
IDLE_SECONDS = 10.0
PASSES = 200
CHUNK = 500_000

DRAIN_RATIO_TARGET = 0.9  # the served queue's drain within 10% of the empty table's
IDLE_CPU_TARGET = 5.0  # % of one core
PASS_TARGET_MS = 5.0


async def fill_blocked(conn: asyncpg.Connection, paused: int, full: int, tomorrow: int) -> None:
    """The three backlogs, written directly (no triggers: statuses are set as the
    service would set them)."""
    await conn.execute(
        "INSERT INTO job_queues (name, is_active) VALUES ($1, false), ($2, true) "
        "ON CONFLICT (name) DO NOTHING",
        PAUSED,
        FULL,
    )
    await conn.execute("SET session_replication_role = replica")
    try:
        for queue, status, rows, run_at, priority in (
            (PAUSED, "queued", paused, "now() - interval '1 hour'", 100),
            (FULL, "queued", full, "now() - interval '1 hour'", 100),
            (QUEUE, "scheduled", tomorrow, "now() + interval '1 day'", 10),
        ):
            for lo in range(1, rows + 1, CHUNK):
                hi = min(rows, lo + CHUNK - 1)
                await conn.execute(
                    f"""
                    INSERT INTO jobs (queue_name, status, priority, payload, run_at)
                    SELECT $1, $2, $3, {sql_payload()}, {run_at}
                    FROM generate_series($4::int, $5::int) g
                    """,
                    queue,
                    status,
                    priority,
                    lo,
                    hi,
                    timeout=3600,
                )
    finally:
        await conn.execute("RESET session_replication_role")
    await conn.execute("VACUUM (ANALYZE) jobs", timeout=3600)


async def fill_redis(ctx: Ctx, depth: int) -> None:
    """The full queue's normal list at REDIS_QUEUE_MAX_DEPTH (no worker serves it)."""
    key = Keys(ctx.env.prefix).queue_list(FULL, "normal")
    await ctx.redis.delete(key)
    for lo in range(0, depth, 5000):
        await ctx.redis.lpush(key, *(["{}"] * min(5000, depth - lo)))


def _settings(ctx: Ctx) -> Settings:
    return Settings(
        database_url=ctx.env.dsn,
        redis_url=ctx.env.redis_url,
        redis_prefix=ctx.env.prefix,
        **{k.lower(): v for k, v in ctx.env.overrides.items()},  # type: ignore[arg-type]
    )


async def pass_times(ctx: Ctx, settings: Settings) -> list[float]:
    """Milliseconds of one migrator pass (promote, move, the next-due probe) while only
    the blocked backlogs exist: the work done every 50 ms while a queue is full."""
    migrator = Migrator(
        store=JobStore(ctx.pool), redis=ctx.redis, keys=Keys(ctx.env.prefix), settings=settings
    )
    times: list[float] = []
    for _ in range(PASSES):
        t0 = time.perf_counter()
        result = await migrator.move_due_jobs()
        await migrator.store.seconds_until_next_due()
        times.append((time.perf_counter() - t0) * 1e3)
        if result.moved:
            raise RuntimeError(f"a pass moved {result.moved} jobs from the blocked backlog")
    return times


async def run_backlog(ctx: Ctx) -> None:
    """The scenario (registered as `backlog` in bench.scenarios)."""
    res = ctx.results
    scale = ctx.opts.backlog_scale
    paused, full, tomorrow = (int(n * scale) for n in (PAUSED_ROWS, FULL_ROWS, TOMORROW_ROWS))
    settings = _settings(ctx)
    depth = settings.redis_queue_max_depth
    res.note(
        "backlog",
        f"blocked backlog: {paused:,} due jobs in a paused queue, {full:,} due jobs in a "
        f"queue whose Redis list holds REDIS_QUEUE_MAX_DEPTH={depth:,}, {tomorrow:,} jobs of "
        f"the served queue due tomorrow at priority 10; the served queue drains "
        f"{ctx.opts.jobs} jobs as in `drain`. Idle CPU: the bench database's backends over "
        f"{IDLE_SECONDS:g} s with only the migrator running (/proc). Pass: {PASSES} "
        "in-process Migrator.move_due_jobs() + SECONDS_UNTIL_NEXT_DUE, median and p99",
    )
    empty_drain = await empty_table_drain(ctx, "backlog")

    async with ctx.conn() as conn:
        await reset_jobs(conn)
        t0 = time.perf_counter()
        await fill_blocked(conn, paused, full, tomorrow)
        res.note("backlog", f"fill and VACUUM ANALYZE: {time.perf_counter() - t0:.0f} s")
    await ctx.env.clear_redis(ctx.redis)
    await fill_redis(ctx, depth)

    # A pass over the blocked queues, in this process.
    times = await pass_times(ctx, settings)
    pass_ms = res.metric(
        "backlog", "migrator pass, all blocked (median)", "ms", PASS_TARGET_MS, "<="
    )
    pass_ms.values.append(statistics.median(times))
    res.metric("backlog", "migrator pass, all blocked (p99)", "ms").values.append(
        percentile(times, 99)
    )

    # The plans of the pass's statements on this table (rolled back).
    async with ctx.conn() as conn:
        batch = settings.migrator_batch_size
        plans = {}
        for name, statement, args in (
            ("MOVE_DUE_JOBS (served queue)", sql.MOVE_DUE_JOBS, [[QUEUE], batch, "10000"]),
            ("PROMOTE_DUE_JOBS", sql.PROMOTE_DUE_JOBS, [batch]),
            ("SECONDS_UNTIL_NEXT_DUE", sql.SECONDS_UNTIL_NEXT_DUE, []),
        ):
            ms, plan, _ = await _explain_ms(conn, statement, args, ctx.opts.query_reps)
            plans[name] = plan
            res.metric("backlog", f"{name} on the blocked table", "ms").values.append(ms)
            removed = [line.strip() for line in plan.splitlines() if "Removed by Filter" in line]
            log(f"  {name}: {ms:.3f} ms; {removed or 'no rows removed by a filter'}")
    ctx.results.details.setdefault("backlog", {})["plans"] = plans

    # PostgreSQL's CPU while nothing can move: only the migrator runs.
    env = ctx.env.service_env(BENCH_MODE="drain")
    migrator = start_service("backlog-migrator", ["-m", "app.migrator"], env, ctx.log_dir)
    try:
        await _wait_ready(ctx, [], migrator)
        await ctx.settle([migrator])
        meter = CpuMeter(ctx.env.db_name, [migrator])
        meter.start()
        await asyncio.sleep(IDLE_SECONDS)
        shares = meter.stop()
    except BaseException:
        migrator.kill()
        raise
    problems = await stop_all([migrator])
    if problems:
        raise RuntimeError("; ".join(problems))
    cores = os.cpu_count() or 1  # the shares are of the whole machine
    pg = shares.get("postgres", 0.0) * cores
    res.metric(
        "backlog", "PostgreSQL CPU, nothing can move", "% of a core", IDLE_CPU_TARGET, "<="
    ).values.append(pg)
    res.metric("backlog", "shared PostgreSQL processes, same window", "% of a core").values.append(
        shares.get("postgres-shared", 0.0) * cores
    )
    res.metric("backlog", "migrator process, same window", "% of a core").values.append(
        shares.get("migrator", 0.0) * cores
    )

    # The served queue drains beside the blocked backlog.
    for run in range(ctx.opts.runs):
        ids = await prepare_backlog(ctx, truncate=False)
        await fill_redis(ctx, depth)
        result = await drain_once(ctx, ids, f"backlog{run + 1}", profile=False, only_these=True)
        _record_drain(ctx, "backlog", result)
    blocked = res.find("backlog", "drain jobs/s")
    assert blocked is not None
    ratio = res.metric("backlog", "drain blocked/empty", "x", DRAIN_RATIO_TARGET, ">=")
    ratio.values.append(blocked.median / empty_drain.median)
