"""`python -m bench.dashboard` (`make bench-dashboard`): the server time of every
dashboard page with a big jobs table.

Fills its own database (`hq_bench_<id>`, dropped at the end) with ROWS jobs (default
1,000,000) over eight queues and the last day: 90% completed, 3% failed, 2% queued (half
due, half tomorrow), 1% cancelled, 1% discarded, 0.5% migrated, the 300 newest running
on 20 workers, and one job_logs row per finished job; 24 hours of chart history in
Redis (every minute of every queue busy: the most a chart page reads) and 20 live
worker heartbeats. Then it starts `python -m app` (migrator and worker off, so nothing
changes the table while it measures), logs in through the form, and asks each page
REPS times in a row: the figure is the page's own Server-Timing (from the first
dependency to the rendered body), with the wall time over loopback beside it. Target:
every page under 200 ms at the 95th percentile. Prints a table and writes
bench-results/dashboard-<timestamp>.json; exits 1 if a page missed the target.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import redis.asyncio as aioredis

from app.keys import Keys
from app.metrics import HISTORY_RESOLUTIONS
from bench.env import ROOT, BenchEnv, free_port, log, server_settings, sql_payload, start_service
from bench.report import percentile

TARGET_MS = 200.0
ADMIN_KEY = "bench-dashboard-admin"
QUEUES = (
    "email-sending",
    "email-sending",
    "email-sending",  # three shares of eight: the busy queue
    "webhook:process",
    "bounce:process",
    "warmup:process",
    "analytics:daily-aggregate",
    "bench",
)
WORKERS = 20
RUNNING = 300
WAIT_BUCKETS = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__)
    p.add_argument("--rows", type=int, default=1_000_000, help="jobs in the table")
    p.add_argument("--reps", type=int, default=20, help="requests per page")
    p.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--out", type=Path, help="JSON file (default bench-results/dashboard-<ts>.json)")
    return p.parse_args(argv)


FILL_JOBS = f"""
INSERT INTO jobs (queue_name, status, priority, payload, attempt_count, max_attempts, run_at,
                  started_at, completed_at, failed_at, last_error_message, worker_id,
                  lease_expires_at, created_at, updated_at)
SELECT q, st, 100, {sql_payload()},
       CASE WHEN st IN ('queued', 'cancelled') THEN 0 WHEN st IN ('failed', 'discarded') THEN 3
            ELSE 1 END,
       3,
       CASE WHEN st = 'queued' AND g % 2 = 0 THEN now() + interval '1 day' ELSE ts END,
       CASE WHEN st IN ('completed', 'failed', 'discarded', 'running') THEN ts END,
       CASE WHEN st = 'completed' THEN ts + interval '3 ms' END,
       CASE WHEN st IN ('failed', 'discarded') THEN ts + interval '3 ms' END,
       CASE WHEN st IN ('failed', 'discarded') THEN 'SMTPError: 550 mailbox unavailable' END,
       CASE WHEN st = 'running' THEN 'bench-worker-' || (g % {WORKERS})
            WHEN st IN ('completed', 'failed', 'discarded') THEN 'bench-filler' END,
       CASE WHEN st = 'running' THEN now() + interval '30 s' END,
       ts, ts + interval '3 ms'
FROM (
    SELECT g, (ARRAY{list(QUEUES)!r})[1 + g % {len(QUEUES)}] AS q,
           CASE WHEN g > $1 - {RUNNING} THEN 'running'
                WHEN g % 1000 < 900 THEN 'completed'
                WHEN g % 1000 < 930 THEN 'failed'
                WHEN g % 1000 < 950 THEN 'queued'
                WHEN g % 1000 < 960 THEN 'cancelled'
                WHEN g % 1000 < 970 THEN 'discarded'
                WHEN g % 1000 < 975 THEN 'migrated_to_redis'
                ELSE 'completed' END AS st,
           now() - make_interval(secs => ($1 - g) * 86400.0 / $1) AS ts
    FROM generate_series($2::int, $3::int) g
) s
"""

FILL_LOGS = """
INSERT INTO job_logs (job_id, status, log_message, attempt_number, worker_id, started_at,
                      finished_at, duration, created_at)
SELECT id, CASE WHEN status = 'completed' THEN 'completed' ELSE 'failed' END,
       last_error_message, attempt_count, worker_id, started_at,
       started_at + interval '3 ms', interval '3 ms', started_at + interval '3 ms'
FROM jobs WHERE status IN ('completed', 'failed', 'discarded')
"""


async def fill_database(dsn: str, rows: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO job_queues (name) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
            list(set(QUEUES)),
        )
        await conn.execute("SET session_replication_role = replica")  # no triggers
        chunk = 250_000
        for lo in range(1, rows + 1, chunk):
            await conn.execute(FILL_JOBS, rows, lo, min(rows, lo + chunk - 1), timeout=3600)
            log(f"  jobs: {min(rows, lo + chunk - 1):,}")
        await conn.execute(FILL_LOGS, timeout=3600)
        await conn.execute("RESET session_replication_role")
        log("  VACUUM ANALYZE")
        await conn.execute("VACUUM (ANALYZE) jobs", timeout=3600)
        await conn.execute("VACUUM (ANALYZE) job_logs", timeout=3600)
    finally:
        await conn.close()


async def fill_redis(redis: aioredis.Redis, keys: Keys) -> None:
    """A full day of history for every queue, and live workers."""
    now = int(time.time())
    async with redis.pipeline(transaction=False) as pipe:
        for resolution, ttl in HISTORY_RESOLUTIONS.items():
            last = now - now % resolution
            for i in range(ttl // resolution):
                fields: dict[str, int] = {}
                for q in set(QUEUES):
                    for counter in ("created", "completed", "failed", "dead_lettered"):
                        fields[f"{counter}|{q}"] = 10 + i % 7
                    for label in WAIT_BUCKETS:
                        fields[f"wait_seconds|{label}|{q}"] = 3 + i % 5
                key = keys.metric_history(resolution, last - i * resolution)
                pipe.hset(key, mapping=fields)
                pipe.expire(key, ttl)
        for w in range(WORKERS):
            worker_id = f"bench-worker-{w}"
            beat = {"at": now, "queues": sorted(set(QUEUES)), "concurrency": 50}
            pipe.set(keys.worker_heartbeat(worker_id), orjson.dumps(beat), ex=600)
            pipe.zadd(keys.workers_index(), {worker_id: now + 600})  # live while we measure
        await pipe.execute()


def pages(job_ids: dict[str, str]) -> dict[str, str]:
    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    two_hours_ago = (datetime.now(UTC) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")
    return {
        "overview": "/dashboard",
        "charts, last hour": "/dashboard/charts",
        "charts, 24 hours": "/dashboard/charts?window=day",
        "charts, 24 hours, one queue": "/dashboard/charts?window=day&queue=email-sending",
        "jobs": "/dashboard/jobs",
        "jobs, one queue": "/dashboard/jobs?queue_name=webhook:process",
        "jobs, failed": "/dashboard/jobs?status=failed",
        "jobs, running": "/dashboard/jobs?status=running",
        "jobs, queue + queued": "/dashboard/jobs?queue_name=bounce:process&status=queued",
        # Fewer than a page of matches: the listing reads the queue's whole index.
        "jobs, queue + running": "/dashboard/jobs?queue_name=warmup:process&status=running",
        "jobs, created range": (
            f"/dashboard/jobs?created_from={two_hours_ago}&created_to={hour_ago}"
        ),
        "job (failed, with logs)": f"/dashboard/jobs/{job_ids['failed']}",
        "job (completed)": f"/dashboard/jobs/{job_ids['completed']}",
        "dead letters": "/dashboard/dead-letters",
        "dead letters, one queue": "/dashboard/dead-letters?queue_name=email-sending",
        "replay all: confirmation": "/dashboard/dead-letters/replay-all?queue_name=email-sending",
        "queues": "/dashboard/queues",
        "workers": "/dashboard/workers",
    }


def server_ms(response: httpx.Response) -> float:
    found = re.fullmatch(r"app;dur=([\d.]+)", response.headers.get("server-timing", ""))
    if found is None:
        raise RuntimeError(f"{response.request.url}: no Server-Timing ({response.status_code})")
    return float(found.group(1))


def login(client: httpx.Client) -> None:
    page = client.get("/dashboard/login")
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert token is not None
    response = client.post(
        "/dashboard/login", data={"login_token": token.group(1), "api_key": ADMIN_KEY}
    )
    if response.status_code != 303:
        raise RuntimeError(f"login failed: {response.status_code} {response.text[:200]}")


def measure(base: str, job_ids: dict[str, str], reps: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with httpx.Client(base_url=base, timeout=30) as client:
        login(client)
        targets = pages(job_ids)
        # Page 2 of the lists: follow each first page's "Next page" link.
        for name, path in (
            ("jobs, page 2", "/dashboard/jobs"),
            ("dead letters, page 2", "/dashboard/dead-letters"),
        ):
            link = re.search(r'href="([^"]+)" rel="next"', client.get(path).text)
            assert link is not None, f"{path} has no next page"
            targets[name] = link.group(1).replace("&amp;", "&")
        targets["overview, auto-refresh"] = "/dashboard"
        for name, path in targets.items():
            headers = {"X-Dashboard-Fragment": "1"} if name == "overview, auto-refresh" else {}
            for _ in range(2):  # warm the pools and the plan cache
                client.get(path, headers=headers)
            server, wall = [], []
            for _ in range(reps):
                t0 = time.perf_counter()
                response = client.get(path, headers=headers)
                wall.append(1000 * (time.perf_counter() - t0))
                if response.status_code != 200:
                    raise RuntimeError(f"{path}: {response.status_code} {response.text[:300]}")
                server.append(server_ms(response))
            p95 = percentile(server, 95)
            row: dict[str, Any] = {
                "page": name,
                "path": path,
                "server_ms_median": statistics.median(server),
                "server_ms_p95": p95,
                "server_ms_max": max(server),
                "wall_ms_median": statistics.median(wall),
                "bytes": len(response.content),
            }
            row["pass"] = p95 <= TARGET_MS
            rows.append(row)
            log(f"  {name}: {row['server_ms_median']:.1f} ms (p95 {row['server_ms_p95']:.1f})")
    return rows


def print_table(rows: list[dict[str, Any]], rows_in_table: int, reps: int) -> None:
    print(f"\nDashboard pages with {rows_in_table:,} jobs ({reps} requests each; ms)\n")
    print(f"{'page':34} {'server p50':>10} {'p95':>8} {'max':>8} {'wall p50':>9}  target")
    for r in rows:
        verdict = "PASS" if r["pass"] else "FAIL"
        print(
            f"{r['page']:34} {r['server_ms_median']:10.1f} {r['server_ms_p95']:8.1f} "
            f"{r['server_ms_max']:8.1f} {r['wall_ms_median']:9.1f}  < {TARGET_MS:.0f} {verdict}"
        )


async def run(
    args: argparse.Namespace, log_dir: Path
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    env = BenchEnv(admin_dsn=args.admin_url, redis_url=args.redis_url, workdir=log_dir)
    redis = aioredis.Redis.from_url(env.redis_url, socket_timeout=30)
    log(f"database {env.db_name}, Redis prefix {env.prefix}")
    await env.create()
    try:
        t0 = time.perf_counter()
        await fill_database(env.dsn, args.rows)
        await fill_redis(redis, Keys(env.prefix))
        log(f"filled in {time.perf_counter() - t0:.0f} s")
        conn = await asyncpg.connect(env.dsn)
        try:
            job_ids = {
                status: str(
                    await conn.fetchval(
                        "SELECT id FROM jobs WHERE status = $1 ORDER BY created_at DESC LIMIT 1",
                        status,
                    )
                )
                for status in ("failed", "completed")
            }
            meta = await server_settings(conn, redis)
            meta["jobs_by_status"] = {
                r["status"]: r["n"]
                for r in await conn.fetch("SELECT status, count(*) AS n FROM jobs GROUP BY 1")
            }
            meta["job_logs"] = await conn.fetchval("SELECT count(*) FROM job_logs")
        finally:
            await conn.close()
        port = free_port()
        digest = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
        service_env = env.service_env(
            EMBED_MIGRATOR="false",
            EMBED_WORKER="false",
            API_KEYS=f"bench:admin:sha256:{digest}",
            DASHBOARD_SECRET="bench",
            LOG_LEVEL="WARNING",
        )
        api = start_service("api", ["-m", "app", "--port", str(port)], service_env, log_dir)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            async with httpx.AsyncClient(base_url=base) as probe:
                while True:
                    api.check_alive()
                    try:
                        if (await probe.get("/health/ready")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError("the API did not start")
                    await asyncio.sleep(0.1)
            rows = await asyncio.to_thread(measure, base, job_ids, args.reps)
        finally:
            await api.stop()
        return rows, meta
    finally:
        try:
            await env.drop()
        finally:
            await env.clear_redis(redis)
            await redis.aclose()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = datetime.now(UTC)
    log_dir = ROOT / "bench-results" / f"dashboard-logs-{started:%Y%m%dT%H%M%SZ}"
    log_dir.mkdir(parents=True, exist_ok=True)
    rows, meta = asyncio.run(run(args, log_dir))
    print_table(rows, args.rows, args.reps)
    out = args.out or ROOT / "bench-results" / f"dashboard-{started:%Y%m%dT%H%M%SZ}.json"
    out.write_bytes(
        orjson.dumps(
            {
                "started": started.isoformat(),
                "rows": args.rows,
                "reps": args.reps,
                "meta": meta,
                "pages": rows,
            },
            option=orjson.OPT_INDENT_2,
        )
    )
    print(f"\nwritten to {out}")
    sys.exit(0 if all(r["pass"] for r in rows) else 1)


if __name__ == "__main__":
    main()
