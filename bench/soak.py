"""`python -m bench.soak` (`make soak`, DURATION=seconds, default 1200): the service under
a steady load for a long time, on a table that is vacuumed while it is written.

Producers enqueue a steady `--rate` jobs/s (default 3,000: batches every 100 ms through
JobClient.enqueue_many; priorities 10/100/200; 5% fail their first attempt, 1% are due
30 s later) while 2 worker processes and a migrator (with its maintenance: retention
with a short window) drain them. Every minute it prints throughput (first attempts
started), enqueue->start p50/p99 (from when the job was due), the size of `jobs` and of
its indexes, and dead tuples; at the end, the targets: throughput of the last 5 minutes
within 10% of the first 5, p99 of the last 5 at most twice the first, and the size of
jobs with its indexes grown less than 10% over the last 10 minutes (windows shrink
with a shorter DURATION).

Autovacuum: it is a server-wide setting (`autovacuum`, reloaded from postgresql.conf;
neither ALTER DATABASE nor a table's storage parameters can turn on a launcher that is
off, and turning it on for the whole server would change the runs of everyone else on a
shared machine). When the server runs without it, the soak runs an autovacuum of its
own for its database: every 15 s (autovacuum_naptime's default is 60 s per database,
shorter here for a shorter run) it vacuums each table whose dead tuples exceed
autovacuum_vacuum_threshold + autovacuum_vacuum_scale_factor * reltuples, and analyzes
on the analyze thresholds (the server's values), throttled by the autovacuum cost
settings (autovacuum_vacuum_cost_delay, vacuum_cost_limit) as the daemon would be.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import redis.asyncio as aioredis

from app.producer import JobClient
from bench.env import ROOT, BenchEnv, Service, start_service, stop_all
from bench.report import percentile
from bench.run import git_revision
from bench.soak_handlers import QUEUE

BATCHES_PER_SECOND = 10
VACUUM_NAPTIME = 15.0


@dataclass(slots=True)
class Minute:
    minute: int
    enqueued: int
    started: int
    p50_ms: float
    p99_ms: float
    jobs_mib: float
    indexes_mib: float
    dead_tuples: int
    live_tuples: int
    vacuums: int
    backlog: int


@dataclass(slots=True)
class Soak:
    env: BenchEnv
    rate: float
    duration: float
    redis: aioredis.Redis
    pool: asyncpg.Pool
    latency_key: str
    enqueued: int = 0
    vacuums: int = 0
    minutes: list[Minute] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)


def job_item(i: int, now: datetime) -> dict[str, Any]:
    delayed = random.random() < 0.01
    due = now + timedelta(seconds=30) if delayed else now
    item: dict[str, Any] = {
        "queue_name": QUEUE,
        "priority": random.choice((10, 100, 100, 200)),
        "payload": {"n": i, "due": due.timestamp(), "fail_once": random.random() < 0.05},
    }
    if delayed:
        item["run_at"] = due.isoformat()
    return item


async def produce(soak: Soak, client: JobClient) -> None:
    """`rate` jobs/s in BATCHES_PER_SECOND batches, on a fixed schedule (a late batch
    does not shift the next ones)."""
    per_batch = soak.rate / BATCHES_PER_SECOND
    t0 = time.monotonic()
    owed = 0.0
    tick = 0
    while not soak.stop.is_set():
        owed += per_batch
        n = int(owed)
        owed -= n
        now = datetime.now(UTC)
        items = [job_item(soak.enqueued + k, now) for k in range(n)]
        await client.enqueue_many(items)
        soak.enqueued += n
        tick += 1
        delay = t0 + tick / BATCHES_PER_SECOND - time.monotonic()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(soak.stop.wait(), delay)


async def autovacuum(soak: Soak, conn: asyncpg.Connection) -> None:
    """The autovacuum daemon's rule for this database, with the server's thresholds and
    cost settings (see the module docstring)."""
    settings = {
        r["name"]: r["setting"]
        for r in await conn.fetch(
            "SELECT name, setting FROM pg_settings WHERE name LIKE 'autovacuum_%' "
            "OR name = 'vacuum_cost_limit'"
        )
    }
    delay = settings["autovacuum_vacuum_cost_delay"]
    limit = settings["autovacuum_vacuum_cost_limit"]
    if int(limit) < 0:
        limit = settings["vacuum_cost_limit"]
    await conn.execute(f"SET vacuum_cost_delay = '{float(delay)}ms'")
    await conn.execute(f"SET vacuum_cost_limit = {int(limit)}")
    vac_t, vac_f = (
        float(settings["autovacuum_vacuum_threshold"]),
        float(settings["autovacuum_vacuum_scale_factor"]),
    )
    an_t, an_f = (
        float(settings["autovacuum_analyze_threshold"]),
        float(settings["autovacuum_analyze_scale_factor"]),
    )
    while not soak.stop.is_set():
        rows = await conn.fetch(
            """
            SELECT s.relname, s.n_dead_tup, s.n_mod_since_analyze, greatest(c.reltuples, 0) AS n
            FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
            """
        )
        for r in rows:
            if r["n_dead_tup"] > vac_t + vac_f * r["n"]:
                await conn.execute(f'VACUUM (ANALYZE) "{r["relname"]}"')
                soak.vacuums += 1
            elif r["n_mod_since_analyze"] > an_t + an_f * r["n"]:
                await conn.execute(f'ANALYZE "{r["relname"]}"')
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(soak.stop.wait(), VACUUM_NAPTIME)


async def sample(soak: Soak, minute: int, enqueued_before: int) -> Minute:
    raw = await soak.redis.lrange(soak.latency_key, 0, -1)
    await soak.redis.ltrim(soak.latency_key, len(raw), -1)
    waits = [float(x) * 1000 for x in raw]
    row = await soak.pool.fetchrow(
        """
        SELECT pg_relation_size('jobs') AS heap, pg_indexes_size('jobs') AS idx,
               s.n_dead_tup, s.n_live_tup,
               (SELECT count(*) FROM jobs WHERE status = 'queued' AND run_at <= now()) AS backlog
        FROM pg_stat_user_tables s WHERE s.relname = 'jobs'
        """
    )
    assert row is not None
    return Minute(
        minute=minute,
        enqueued=soak.enqueued - enqueued_before,
        started=len(waits),
        p50_ms=statistics.median(waits) if waits else float("nan"),
        p99_ms=percentile(waits, 99) if waits else float("nan"),
        jobs_mib=row["heap"] / 2**20,
        indexes_mib=row["idx"] / 2**20,
        dead_tuples=int(row["n_dead_tup"]),
        live_tuples=int(row["n_live_tup"]),
        vacuums=soak.vacuums,
        backlog=int(row["backlog"]),
    )


HEADER = (
    f"{'min':>4} {'enqueued':>9} {'started/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
    f"{'jobs MiB':>9} {'idx MiB':>8} {'dead tup':>9} {'live tup':>9} {'backlog':>8} {'vacuums':>7}"
)


def line(m: Minute, seconds: float) -> str:
    return (
        f"{m.minute:>4} {m.enqueued:>9,} {m.started / seconds:>9,.0f} {m.p50_ms:>8.1f} "
        f"{m.p99_ms:>8.1f} {m.jobs_mib:>9.1f} {m.indexes_mib:>8.1f} {m.dead_tuples:>9,} "
        f"{m.live_tuples:>9,} {m.backlog:>8,} {m.vacuums:>7}"
    )


def verdicts(minutes: list[Minute], window: int, size_window: int) -> list[str]:
    first, last = minutes[:window], minutes[-window:]
    out = []
    t_first = statistics.mean(m.started for m in first)
    t_last = statistics.mean(m.started for m in last)
    ratio = t_last / t_first if t_first else float("nan")
    out.append(
        f"throughput, last {window} min / first {window} min: {ratio:.3f} "
        f"(target 0.9-1.1) {'PASS' if 0.9 <= ratio <= 1.1 else 'FAIL'}"
    )
    p_first = statistics.median(m.p99_ms for m in first)
    p_last = statistics.median(m.p99_ms for m in last)
    pr = p_last / p_first if p_first else float("nan")
    out.append(
        f"p99, last {window} min / first {window} min (median of the minutes' p99): "
        f"{p_last:.1f} / {p_first:.1f} ms = {pr:.2f} (target <= 2) {'PASS' if pr <= 2 else 'FAIL'}"
    )
    sized = minutes[-size_window:]
    s0 = sized[0].jobs_mib + sized[0].indexes_mib
    s1 = sized[-1].jobs_mib + sized[-1].indexes_mib
    growth = (s1 - s0) / s0 if s0 else float("nan")
    out.append(
        f"jobs + indexes over the last {size_window} min: {s0:.1f} -> {s1:.1f} MiB "
        f"({growth:+.1%}; target < +10%) {'PASS' if growth < 0.10 else 'FAIL'}"
    )
    return out


def append_soak_history(args: argparse.Namespace, soak: Soak, results: list[str]) -> None:
    """The curve and the verdicts, one line in bench-results/history.jsonl."""
    line = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_revision(),
        "soak": {
            "rate": args.rate,
            "duration_s": args.duration,
            "workers": args.workers,
            "retention_s": args.retention,
            "sample_s": args.sample,
            "minutes": [asdict(m) for m in soak.minutes],
            "verdicts": results,
        },
    }
    path = ROOT / "bench-results" / "history.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as f:
        f.write(orjson.dumps(line) + b"\n")


async def run(args: argparse.Namespace) -> int:
    log_dir = Path(tempfile.mkdtemp(prefix="hq-soak-"))
    env = BenchEnv(admin_dsn=args.admin_url, redis_url=args.redis_url, workdir=log_dir)
    redis = aioredis.Redis.from_url(env.redis_url)
    await env.create()
    conn = await asyncpg.connect(env.dsn)
    await conn.execute("INSERT INTO job_queues (name) VALUES ($1) ON CONFLICT DO NOTHING", QUEUE)
    server_autovacuum = await conn.fetchval("SHOW autovacuum")
    pool = await asyncpg.create_pool(env.dsn, min_size=1, max_size=2)
    soak = Soak(
        env=env,
        rate=args.rate,
        duration=args.duration,
        redis=redis,
        pool=pool,
        latency_key=f"{env.prefix}soak:latency",
    )
    service_env = env.service_env(
        HANDLER_MODULES="bench.soak_handlers",
        SOAK_LATENCY_KEY=soak.latency_key,
        RETENTION_COMPLETED=str(args.retention),
        RETENTION_FAILED=str(args.retention),
        RETENTION_INTERVAL="10",
        EMBED_MIGRATOR="false",
        EMBED_WORKER="false",
    )
    services: list[Service] = [
        start_service("migrator", ["-m", "app.migrator"], service_env, log_dir),
        *(
            start_service(f"worker{i + 1}", ["-m", "app.worker"], service_env, log_dir)
            for i in range(args.workers)
        ),
    ]
    for s in services:
        s.clean_exits = (0, -signal.SIGTERM)
    # The service's default: due jobs pushed by their producer (DIRECT_PUSH); --no-direct
    # sends every job through the migrator.
    client = await JobClient.connect(
        env.dsn,
        min_size=1,
        max_size=4,
        redis_url=None if args.no_direct else env.redis_url,
        redis_prefix=env.prefix,
    )
    print(
        f"soak: {args.rate:,.0f} jobs/s for {args.duration:.0f} s, {args.workers} workers + "
        f"a migrator, retention {args.retention} s; direct path "
        f"{'off' if args.no_direct else 'on'}; server autovacuum={server_autovacuum}"
        + ("" if server_autovacuum == "on" else " -> the soak's own autovacuum (see --help)"),
        flush=True,
    )
    print(HEADER, flush=True)
    tasks = [asyncio.create_task(produce(soak, client))]
    vacuum_conn = await asyncpg.connect(env.dsn)
    if server_autovacuum != "on":
        tasks.append(asyncio.create_task(autovacuum(soak, vacuum_conn)))
    # SIGTERM or SIGINT (also under nohup, which ignores SIGINT) ends the run early:
    # the verdicts of the minutes so far, then the clean-up.
    finish = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, finish.set)
    code = 0
    try:
        t0 = time.monotonic()
        minute = 0
        interval = args.sample
        while time.monotonic() - t0 < args.duration and not finish.is_set():
            before = soak.enqueued
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    finish.wait(), max(0.0, t0 + (minute + 1) * interval - time.monotonic())
                )
            if finish.is_set():
                print("stopped by a signal", flush=True)
                break
            for s in services:
                s.check_alive()
            for t in tasks:
                if t.done():
                    t.result()
            minute += 1
            m = await sample(soak, minute, before)
            soak.minutes.append(m)
            print(line(m, interval), flush=True)
        if not soak.minutes:
            raise RuntimeError("stopped before the first sample")
        window = max(1, min(5, len(soak.minutes) // 4))
        size_window = max(2, min(10, len(soak.minutes) // 2))
        print()
        results = verdicts(soak.minutes, window, size_window)
        for v in results:
            print(v)
        append_soak_history(args, soak, results)
    except Exception as exc:
        print(f"soak stopped: {type(exc).__name__}: {exc}", file=sys.stderr)
        for s in services:
            print(f"--- {s.name}\n{s.log_tail()}", file=sys.stderr)
        code = 1
    finally:
        soak.stop.set()
        for t in tasks:
            with contextlib.suppress(Exception):
                await t
        await client.close()
        for problem in await stop_all(services):
            print(problem, file=sys.stderr)
        await vacuum_conn.close()
        await conn.close()
        await pool.close()
        await env.drop()
        await env.clear_redis(redis)
        await redis.aclose()
    return code


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--duration", type=float, default=float(os.environ.get("DURATION", 1200)))
    p.add_argument("--rate", type=float, default=3000.0, help="jobs/s enqueued")
    p.add_argument("--workers", type=int, default=2, help="worker processes")
    p.add_argument("--retention", type=int, default=120, help="seconds terminal jobs are kept")
    p.add_argument("--sample", type=float, default=60.0, help="seconds per printed line")
    p.add_argument(
        "--no-direct",
        action="store_true",
        help="the producer leaves every job to the migrator (no direct path)",
    )
    p.add_argument(
        "--admin-url",
        default=os.environ.get(
            "BENCH_DATABASE_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    p.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = p.parse_args(argv)
    if args.duration <= 0 or args.rate <= 0 or args.workers < 1 or args.sample <= 0:
        p.error("--duration, --rate, --sample must be positive and --workers at least 1")
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
