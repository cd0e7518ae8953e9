"""Scenarios of a table at scale: index entries written per job, and the operators'
listings and counts on a table of millions of jobs.

`writes`: N jobs taken through insert -> move -> claim -> complete with the service's own
statements; after each step, the index entries the step wrote. No update of `jobs` can
be HOT (checked: n_tup_hot_upd stays 0), so every new row version gets one entry in each
index whose predicate holds for it: the figure is that sum (pg_index predicates
evaluated on the rows), cross-checked by the growth of the indexes' tuple counts
(pgstattuple; pg_stat_user_indexes counts reads, not inserts).

`listings`: a month-like table (`--big-table-rows`, default 10,000,000: mostly
completed, some failed and cancelled, a queued backlog, seven queues of unequal size),
then 50 timed calls of each operator endpoint after 6 untimed ones (so a prepared
statement has had the chance to switch to a generic plan), and one count of jobs by
status timed apart (what /metrics, /queues and /health/queues share per process, at most
once per STATS_MAX_AGE).
"""

from __future__ import annotations

import signal
import statistics
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
from uuid_utils.compat import uuid7

from app.db import hot
from app.db.counts import count_jobs
from app.db.inserts import INSERT_JOBS
from bench.env import (
    ScenarioError,
    free_port,
    log,
    reset_jobs,
    sql_payload,
    start_service,
    stop_all,
    wait_until,
)
from bench.handlers import QUEUE
from bench.report import percentile
from bench.scenarios import Ctx

WRITES_TARGET = 12.0
LISTING_P99_TARGET_MS = 20.0


async def _index_predicates(conn: asyncpg.Connection) -> dict[str, str]:
    rows = await conn.fetch(
        """
        SELECT c.relname AS name, coalesce(pg_get_expr(i.indpred, i.indrelid), 'true') AS pred
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE i.indrelid = 'jobs'::regclass ORDER BY c.relname
        """
    )
    return {r["name"]: r["pred"] for r in rows}


async def _entries_per_index(
    conn: asyncpg.Connection, preds: dict[str, str], ids: list[uuid.UUID]
) -> dict[str, int]:
    """How many of these jobs' current row versions each index holds an entry for."""
    columns = ", ".join(f'count(*) FILTER (WHERE {p}) AS "{n}"' for n, p in preds.items())
    row = await conn.fetchrow(f"SELECT {columns} FROM jobs WHERE id = ANY($1::uuid[])", ids)
    assert row is not None
    return {n: int(row[n]) for n in preds}


async def _index_tuples(conn: asyncpg.Connection, names: list[str]) -> int:
    total = 0
    for name in names:
        row = await conn.fetchrow(
            "SELECT tuple_count + dead_tuple_count AS n FROM pgstattuple($1::regclass)", name
        )
        assert row is not None
        total += int(row["n"])
    return total


async def _hot_updates(conn: asyncpg.Connection) -> int:
    await conn.execute("SELECT pg_stat_force_next_flush()")
    value = await conn.fetchval(
        "SELECT n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'jobs'"
    )
    return int(value)


async def writes(ctx: Ctx) -> None:
    res = ctx.results
    n = min(ctx.opts.jobs, 5_000)
    res.note(
        "writes",
        f"{n} jobs through INSERT_JOBS, MOVE_DUE_JOBS, CLAIM_JOBS, COMPLETE_JOBS on one "
        "connection; entries = sum over indexes of the row versions their predicate "
        "holds for (every update is non-HOT: checked); 'net growth' = growth of the "
        "indexes' tuple counts (pgstattuple, autovacuum of the bench database off)",
    )
    async with ctx.conn() as conn:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        await conn.execute("ALTER TABLE jobs SET (autovacuum_enabled = off)")
        await reset_jobs(conn)
        preds = await _index_predicates(conn)
        names = list(preds)
        per_step: dict[str, dict[str, int]] = {}
        hot0 = await _hot_updates(conn)
        tuples0 = await _index_tuples(conn, names)
        now = datetime.now(UTC)

        ids: list[uuid.UUID] = [
            r["id"]
            for r in await conn.fetch(
                INSERT_JOBS,
                [uuid7() for _ in range(n)],
                [QUEUE] * n,
                ["{}"] * n,
                [None] * n,
                [None] * n,
                [3] * n,
                [None] * n,
                [None] * n,
                [None] * n,  # concurrency_key
                [None] * n,  # the migrator's path (not app.direct)
                None,
            )
        ]
        per_step["insert"] = await _entries_per_index(conn, preds, ids)
        async with conn.transaction():
            moved = await conn.fetch(hot.MOVE_DUE_JOBS, [QUEUE], n, "10000")
        if len(moved) != n:
            raise ScenarioError(f"moved {len(moved)} of {n}")
        per_step["move"] = await _entries_per_index(conn, preds, ids)
        claimed = await conn.fetch(hot.CLAIM_JOBS, ids, "bench-writes", 60.0, "10000")
        if len(claimed) != n:
            raise ScenarioError(f"claimed {len(claimed)} of {n}")
        per_step["claim"] = await _entries_per_index(conn, preds, ids)
        done = await conn.fetch(
            hot.COMPLETE_JOBS,
            ids,
            [1] * n,
            [now] * n,
            [now] * n,
            "bench-writes",
            [{c["id"]: c["lease_token"] for c in claimed}[i] for i in ids],
        )
        if len(done) != n:
            raise ScenarioError(f"completed {len(done)} of {n}")
        per_step["complete"] = await _entries_per_index(conn, preds, ids)
        hot_updates = await _hot_updates(conn) - hot0
        measured = (await _index_tuples(conn, names) - tuples0) / n
        await conn.execute("ALTER TABLE jobs RESET (autovacuum_enabled)")
        await reset_jobs(conn)
    if hot_updates:
        res.note("writes", f"{hot_updates} HOT updates: the sum below over-counts them")
    total = 0.0
    for step, counts in per_step.items():
        per_job = sum(counts.values()) / n
        total += per_job
        res.metric("writes", f"index entries per job: {step}", "entries").values.append(per_job)
        used = ", ".join(f"{k} {v / n:g}" for k, v in counts.items() if v)
        res.note("writes", f"{step}: {used}")
    res.metric(
        "writes", "index entries per job, whole life", "entries", WRITES_TARGET, "<="
    ).values.append(total)
    res.metric(
        "writes", "net index growth per job (pgstattuple; after bottom-up deletion)", "entries"
    ).values.append(measured)


# --- listings on a month-like table ------------------------------------------------------

FILL_CHUNK = 1_000_000
# Queues of unequal size: the listed one is the smallest.
MONTH_QUEUES = (
    (QUEUE, 40),
    ("email-sending", 25),
    ("webhook:process", 15),
    ("analytics:daily-aggregate", 10),
    ("warmup:process", 5),
    ("bounce:process", 4),
    ("analytics:billing-calculate", 1),
)
RARE_QUEUE = MONTH_QUEUES[-1][0]


def _queue_case() -> str:
    arms, upto = [], 0
    for name, weight in MONTH_QUEUES:
        upto += weight
        arms.append(f"WHEN g % 100 < {upto} THEN '{name}'")
    return "CASE " + " ".join(arms) + " END"


async def fill_month(conn: asyncpg.Connection, rows: int) -> dict[str, int]:
    """`rows` jobs over 30 days: 96% completed, 2% failed, 1% cancelled, 1% queued
    (due: a backlog); ids UUIDv7 of their creation time. Triggers are off for the
    fill, so the terminal counters are rebuilt from the table after it."""
    await conn.executemany(
        "INSERT INTO job_queues (name) VALUES ($1) ON CONFLICT DO NOTHING",
        [(name,) for name, _ in MONTH_QUEUES],
    )
    await conn.execute("SET session_replication_role = replica")
    try:
        for lo in range(1, rows + 1, FILL_CHUNK):
            hi = min(rows, lo + FILL_CHUNK - 1)
            await conn.execute(
                f"""
                INSERT INTO jobs (id, queue_name, status, priority, payload, attempt_count,
                                  max_attempts, run_at, started_at, completed_at, failed_at,
                                  last_error_message, worker_id, created_at, updated_at)
                SELECT hybridq_uuidv7(ts), q, st, 100, {sql_payload()},
                       CASE WHEN st = 'queued' THEN 0 ELSE 1 END, 3, ts,
                       CASE WHEN st <> 'queued' THEN ts + interval '2 ms' END,
                       CASE WHEN st = 'completed' THEN ts + interval '3 ms' END,
                       CASE WHEN st = 'failed' THEN ts + interval '3 ms' END,
                       CASE WHEN st = 'failed' THEN 'Error: bench filler' END,
                       CASE WHEN st <> 'queued' THEN 'bench-filler' END,
                       ts, ts + interval '3 ms'
                FROM (
                    SELECT g, {_queue_case()} AS q,
                           CASE WHEN g % 1000 < 960 THEN 'completed'
                                WHEN g % 1000 < 980 THEN 'failed'
                                WHEN g % 1000 < 990 THEN 'cancelled'
                                ELSE 'queued' END AS st,
                           now() - make_interval(secs => ($3 - g) * (2592000.0 / $3)) AS ts
                    FROM generate_series($1::int, $2::int) g
                ) s
                """,
                lo,
                hi,
                rows,
                timeout=3600,
            )
            log(f"  filled {hi:,} of {rows:,}")
    finally:
        await conn.execute("RESET session_replication_role")
    await conn.execute("DELETE FROM job_count_changes")
    await conn.execute("DELETE FROM job_counts")
    await conn.execute(
        """
        INSERT INTO job_counts (queue_name, status, n)
        SELECT queue_name, status, count(*) FROM jobs
        WHERE status IN ('completed', 'failed', 'cancelled', 'discarded')
        GROUP BY queue_name, status
        """,
        timeout=3600,
    )
    rows_by_status = await conn.fetch(
        "SELECT status, sum(n)::bigint AS n FROM job_counts GROUP BY status"
    )
    return {r["status"]: int(r["n"]) for r in rows_by_status}


LISTING_CALLS = (
    ("GET /jobs?status=failed", "/jobs?status=failed"),
    ("GET /jobs?queue_name=<smallest queue>", f"/jobs?queue_name={RARE_QUEUE}"),
    ("GET /jobs?queue_name=<largest queue>", f"/jobs?queue_name={QUEUE}"),
    ("GET /jobs", "/jobs"),
    ("GET /dead-letter", "/dead-letter"),
    ("GET /metrics", "/metrics"),
    ("GET /queues", "/queues"),
    ("GET /health/queues", "/health/queues"),
)
WARMUP_CALLS = 6
TIMED_CALLS = 50
COUNT_RUNS = 20


async def listings(ctx: Ctx) -> None:
    res = ctx.results
    m = ctx.opts.big_table_rows
    async with ctx.conn() as conn:
        await reset_jobs(conn)
        t0 = time.perf_counter()
        counts = await fill_month(conn, m)
        fill_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        await conn.execute("VACUUM (ANALYZE) jobs", timeout=3600)
        vacuum_s = time.perf_counter() - t0
        size = await conn.fetchval("SELECT pg_size_pretty(pg_total_relation_size('jobs'))")
        # What /metrics, /queues and /health/queues share (app.counts_cache): one count.
        count_ms = []
        for _ in range(COUNT_RUNS):
            t0 = time.perf_counter()
            await count_jobs(conn, timeout=5.0)
            count_ms.append((time.perf_counter() - t0) * 1000)
        res.metric("listings", "one count of jobs by status (count_jobs) p50", "ms").values.append(
            statistics.median(count_ms)
        )
    res.note(
        "listings",
        f"jobs filled with {m:,} rows over 30 days ({fill_s:.0f} s; VACUUM ANALYZE "
        f"{vacuum_s:.0f} s; {size} with indexes); terminal: {counts}; queues "
        f"{', '.join(f'{q} {w}%' for q, w in MONTH_QUEUES)}. API alone (`python -m app`, "
        f"migrator and worker off, AUTH_ENABLED=false); per endpoint {WARMUP_CALLS} "
        f"untimed calls, then {TIMED_CALLS} timed one after another (httpx, keep-alive); "
        "/metrics, /queues and /health/queues answer from the process's shared count of "
        "jobs by status (STATS_MAX_AGE, app.counts_cache), timed apart as one count",
    )
    port = free_port()
    env = ctx.env.service_env(EMBED_MIGRATOR="false", EMBED_WORKER="false", AUTH_ENABLED="false")
    api = start_service("api", ["-m", "app", "--port", str(port)], env, ctx.log_dir)
    api.clean_exits = (0, -signal.SIGTERM)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:

            async def healthy() -> bool:
                api.check_alive()
                try:
                    return (await c.get("/health/ready")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(healthy, timeout=ctx.opts.timeout, what="the API's /health/ready")
            await ctx.settle([api])
            for label, path in LISTING_CALLS:
                times = await _time_calls(c, path)
                p99 = res.metric("listings", f"{label} p99", "ms", LISTING_P99_TARGET_MS, "<=")
                p99.values.append(percentile(times, 99))
                res.metric("listings", f"{label} p50", "ms").values.append(statistics.median(times))
    finally:
        for p in await stop_all([api]):
            res.error("listings", p)


async def _time_calls(client: httpx.AsyncClient, path: str) -> list[float]:
    times: list[float] = []
    for i in range(WARMUP_CALLS + TIMED_CALLS):
        t = time.perf_counter()
        r = await client.get(path)
        elapsed = (time.perf_counter() - t) * 1000
        if r.status_code != 200:
            raise ScenarioError(f"GET {path}: {r.status_code} {r.text[:200]}")
        if i >= WARMUP_CALLS:
            times.append(elapsed)
    return times


SCALE_SCENARIOS: dict[str, Any] = {"writes": writes, "listings": listings}
