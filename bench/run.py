"""`python -m bench.run` (`make bench`): measure the service as it is.

Sets up its own database (`hq_bench_<id>`, dropped at the end) and Redis prefix
(`hqbench:<id>:`, deleted at the end), runs each scenario several times, prints one
table of medians and ranges with the targets of the issue, the EXPLAIN plans of the
hot queries, and the PostgreSQL and Redis settings it ran with, and writes the figures
to a JSON file for comparisons over time. A benchmark, not a test: it exits 0 when every
scenario produced its figures, whatever they are, and 1 when one could not.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from app.db.pool import create_pool
from app.settings import Settings
from bench.costs import costs
from bench.env import ROOT, BenchEnv, ScenarioError, log, server_settings
from bench.history import PACED_GAP, add_ratios, append_history, flush_floor
from bench.producer import open_producer
from bench.profile import py_spy_path
from bench.report import Results, fmt, table
from bench.scale import SCALE_SCENARIOS
from bench.scenarios import ALIASES, Ctx, Options
from bench.scenarios import SCENARIOS as BASE_SCENARIOS

SCENARIOS = {**BASE_SCENARIOS, **SCALE_SCENARIOS}

# Measured only when asked for (--scenarios costs): per-job costs for the README.
ON_REQUEST = {"costs": costs}
ALL = {**SCENARIOS, **ON_REQUEST}

SERVICE_SETTINGS = (
    "worker_concurrency",
    "worker_fetch_timeout",
    "migrator_batch_size",
    "migrator_poll_interval",
    "redis_queue_max_depth",
    "db_pool_min_size",
    "db_pool_max_size",
    "log_level",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--jobs", type=int, help="N jobs per run (default 10000; --quick 2000)")
    p.add_argument("--runs", type=int, help="runs of each scenario (default 3; --quick 1)")
    p.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated, from {', '.join([*ALL, *ALIASES])} (default: all but "
        f"{', '.join(ON_REQUEST)})",
    )
    p.add_argument(
        "--big-table-rows",
        type=int,
        help="rows of the big-table and listings scenarios (default 10000000; --quick 200000)",
    )
    p.add_argument(
        "--backlog-scale",
        type=float,
        default=1.0,
        help="scale of the backlog scenario's blocked rows (1: 1,000,000 paused, 200,000 "
        "full, 1,000,000 due tomorrow)",
    )
    p.add_argument(
        "--latency-samples", type=int, help="samples per latency run (default 300; --quick 100)"
    )
    p.add_argument("--out", type=Path, help="JSON file (default bench-results/<timestamp>.json)")
    p.add_argument(
        "--quick", action="store_true", help="smoke check: N=2000, 1 run, big table 200k"
    )
    p.add_argument("--timeout", type=float, default=120.0, help="seconds any wait may take")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=15.0,
        help="before each timed section, wait up to this many seconds for other processes "
        "on the machine to use less than 10%% of its CPU (0: do not wait)",
    )
    p.add_argument("--bulk-batch", type=int, default=1000, help="jobs per bulk statement")
    p.add_argument("--http-clients", type=int, default=32, help="concurrent HTTP clients")
    p.add_argument(
        "--http-client",
        default="httpx,raw",
        help="HTTP client kinds to measure with: raw (a minimal HTTP/1.1 client, the "
        "target's), httpx (for reference); default both",
    )
    p.add_argument("--workers", type=int, default=2, help="worker processes in the drain")
    p.add_argument(
        "--py-spy",
        action="store_true",
        help="one extra, uncounted drain run sampled by py-spy; prints the top frames",
    )
    p.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the service logs (and py-spy output) beside the JSON file",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a service setting for the processes it starts, e.g. --set WORKER_CONCURRENCY=50",
    )
    p.add_argument(
        "--admin-url",
        default=os.environ.get(
            "BENCH_DATABASE_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="a DSN it may CREATE DATABASE from (env BENCH_DATABASE_ADMIN_URL)",
    )
    p.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="Redis (env BENCH_REDIS_URL)",
    )
    args = p.parse_args(argv)
    quick = args.quick
    args.jobs = args.jobs or (2_000 if quick else 10_000)
    args.runs = args.runs or (1 if quick else 3)
    if args.big_table_rows is None:
        args.big_table_rows = 200_000 if quick else 10_000_000
    args.latency_samples = args.latency_samples or (100 if quick else 300)
    names: list[str] = []
    for raw in args.scenarios.split(","):
        name = ALIASES.get(raw.strip(), raw.strip())
        if not name:
            continue
        if name not in ALL:
            p.error(f"unknown scenario {raw!r}")
        if name not in names:
            names.append(name)
    args.scenario_list = [s for s in ALL if s in names]
    overrides: dict[str, str] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            p.error(f"--set takes NAME=VALUE, not {item!r}")
        overrides[key.strip().upper()] = value
    args.overrides = overrides
    kinds = [k.strip() for k in args.http_client.split(",") if k.strip()]
    if not kinds or any(k not in ("httpx", "raw") for k in kinds):
        p.error("--http-client takes httpx, raw or both (comma-separated)")
    args.http_client_kinds = kinds
    if args.jobs < 1 or args.runs < 1 or args.workers < 1 or args.http_clients < 1:
        p.error("--jobs, --runs, --workers and --http-clients must be at least 1")
    if args.py_spy and py_spy_path() is None:
        p.error("--py-spy: py-spy not found (.venv/bin/pip install py-spy)")
    return args


def git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def service_settings(overrides: dict[str, str]) -> dict[str, Any]:
    settings = Settings(**{k.lower(): v for k, v in overrides.items()})  # type: ignore[arg-type]
    return {name: getattr(settings, name) for name in SERVICE_SETTINGS}


def print_report(results: Results) -> None:
    meta = results.meta
    print()
    print(
        f"hybridq benchmark {meta['started']}  commit {meta['commit']}  N={meta['options']['jobs']}"
        f"  runs={meta['options']['runs']}  ({meta['duration_s']:.0f} s)"
    )
    print()
    print(table(results))
    if results.notes:
        print("\nHow each figure was taken:")
        for scenario, notes in results.notes.items():
            for n in notes:
                print(f"  {scenario}: {n}")
    cpu = results.details.get("cpu_pct") or {}
    if cpu:
        print(
            f"\nWhere the CPU went in each timed section (% of all {meta['cpu_count']} cores, "
            "median of runs; 'other load' is processes that are not the benchmark's):"
        )
        for label, runs in cpu.items():
            roles = list(dict.fromkeys(r for run in runs for r in run))
            shares = ", ".join(
                f"{r} {fmt(statistics.median(run.get(r, 0.0) for run in runs))}" for r in roles
            )
            print(f"  {label}: {shares}")
    profile = results.details.get("drain_profile")
    if profile:
        print("\npy-spy, uncounted drain run (on-CPU samples; % of the process's samples):")
        for proc, summary in profile.items():
            print(
                f"  {proc}: {summary.get('samples', 0)} samples"
                f" (+{summary.get('startup_samples', 0)} during start-up, left out)"
            )
            for title, key in (
                ("own time by package", "self_by_package_pct"),
                ("own time", "self_pct"),
                ("inclusive", "inclusive_pct"),
            ):
                items = summary.get(key) or []
                print(f"    {title}:")
                for name, pct in items[:10]:
                    print(f"      {pct:5.1f}%  {name}")
    explain = results.details.get("explain")
    if explain:
        for label, data in explain.items():
            print(
                f"\nEXPLAIN, {label} table ({data['jobs_rows']:,} jobs rows, "
                f"{data['jobs_total_bytes'] / 2**20:,.0f} MiB with indexes):"
            )
            for name, plan in data["plans"].items():
                print(f"  -- {name}")
                for line in plan.splitlines():
                    print(f"     {line}")
    if results.errors:
        print("\nScenarios that could not finish:")
        for scenario, errors in results.errors.items():
            for e in errors:
                print(f"  {scenario}: {e}")
    print("\nRan with:")
    pg, rd = meta["servers"]["postgresql"], meta["servers"]["redis"]
    print("  PostgreSQL " + ", ".join(f"{k}={v}" for k, v in pg.items()))
    print("  Redis " + ", ".join(f"{k}={v}" for k, v in rd.items()))
    print(f"  CPUs: {meta['cpu_count']}; Python {meta['python']}")
    if meta.get("flush"):
        f = meta["flush"]
        print(
            f"  flush floor: {f['commit_ms_median']:.3f} ms per durable commit (median of "
            f"{f['commits']:.0f} single-row commits; p90 {f['commit_ms_p90']:.3f} ms): "
            f"{1000 / f['commit_ms_median']:,.0f} commits/s"
        )
        if "paced_commit_ms_median" in f:
            print(
                f"  paced commit: {f['paced_commit_ms_median']:.3f} ms (median of one every "
                f"{PACED_GAP * 1000:g} ms, as the latency scenario enqueues: the floor of an "
                "idle job's latency)"
            )
    svc = ", ".join(f"{k}={v}" for k, v in meta["service_settings"].items())
    print(f"  service: {svc}")
    if meta["options"]["overrides"]:
        print(f"  overrides (--set): {meta['options']['overrides']}")


async def run(args: argparse.Namespace, results: Results, log_dir: Path) -> None:
    env = BenchEnv(
        admin_dsn=args.admin_url,
        redis_url=args.redis_url,
        workdir=log_dir,
        overrides=args.overrides,
    )
    log(f"database {env.db_name}, Redis prefix {env.prefix}, logs in {log_dir}")
    redis = aioredis.Redis.from_url(env.redis_url, socket_timeout=30)
    await env.create()
    pool = await create_pool(env.dsn, min_size=2, max_size=4)
    try:
        async with pool.acquire() as conn:
            results.meta["servers"] = await server_settings(conn, redis)  # type: ignore[arg-type]
        results.meta["cpu_count"] = results.meta["servers"]["cpu_count"]
        results.meta["flush"] = await flush_floor(env.dsn)
        log(f"flush floor: {results.meta['flush']['commit_ms_median']:.3f} ms per durable commit")
        opts = Options(
            jobs=args.jobs,
            runs=args.runs,
            big_table_rows=args.big_table_rows,
            latency_samples=args.latency_samples,
            timeout=args.timeout,
            bulk_batch=args.bulk_batch,
            http_clients=args.http_clients,
            http_client_kinds=args.http_client_kinds,
            workers=args.workers,
            quiet_wait=args.quiet_wait,
            backlog_scale=args.backlog_scale,
            py_spy=args.py_spy,
        )
        ctx = Ctx(env=env, opts=opts, pool=pool, redis=redis, results=results, log_dir=log_dir)
        # The producer takes the direct path unless the run turns it off for the
        # service (--set DIRECT_PUSH=false), so that both sides agree.
        direct = env.overrides.get("DIRECT_PUSH", "true").lower() not in ("0", "false", "no")
        ctx.producer = await open_producer(env.dsn, env.redis_url if direct else None, env.prefix)
        results.meta["producer"] = {
            "one": ctx.producer.one_label,
            "many": ctx.producer.many_label,
            "reference": [ctx.producer.tx_one_label, ctx.producer.tx_many_label],
        }
        for name in args.scenario_list:
            log(f"{name} ...")
            t0 = time.perf_counter()
            try:
                await ALL[name](ctx)
            except ScenarioError as exc:
                results.error(name, str(exc))
                log(f"{name} FAILED: {exc}")
            except Exception as exc:
                results.error(name, f"{type(exc).__name__}: {exc}")
                log(f"{name} CRASHED:\n{traceback.format_exc()}")
            for m in results.metrics:
                if m.scenario in (name, "rss") and m.values:
                    log(f"  {m.scenario} {m.name}: {', '.join(fmt(v) for v in m.values)} {m.unit}")
            log(f"{name} done in {time.perf_counter() - t0:.0f} s")
        await ctx.producer.close()
    finally:
        await pool.close()
        try:
            await env.drop()
        finally:
            await env.clear_redis(redis)
            await redis.aclose()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = datetime.now(UTC)
    out: Path = args.out or ROOT / "bench-results" / f"{started:%Y%m%dT%H%M%SZ}.json"
    results = Results()
    results.meta = {
        "started": started.isoformat(timespec="seconds"),
        "commit": git_revision(),
        "python": platform.python_version(),
        "options": {
            "jobs": args.jobs,
            "runs": args.runs,
            "scenarios": args.scenario_list,
            "big_table_rows": args.big_table_rows,
            "latency_samples": args.latency_samples,
            "bulk_batch": args.bulk_batch,
            "http_clients": args.http_clients,
            "http_client_kinds": args.http_client_kinds,
            "workers": args.workers,
            "quick": args.quick,
            "overrides": args.overrides,
        },
        "service_settings": service_settings(args.overrides),
    }
    log_dir = Path(tempfile.mkdtemp(prefix="hq-bench-"))
    t0 = time.perf_counter()
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is optional on some platforms
        runner = asyncio.run
    try:
        runner(run(args, results, log_dir))
    except KeyboardInterrupt:
        log("interrupted; the partial results follow")
        results.error("bench", "interrupted")
    finally:
        results.meta["duration_s"] = time.perf_counter() - t0
        results.meta.setdefault("servers", {"postgresql": {}, "redis": {}, "cpu_count": None})
        results.meta.setdefault("cpu_count", os.cpu_count())
        kept = None
        if results.errors or args.keep_logs:
            kept = out.with_suffix("").with_name(out.stem + "-logs")
            shutil.copytree(log_dir, kept, dirs_exist_ok=True)
        shutil.rmtree(log_dir, ignore_errors=True)
        flush = results.meta.get("flush")
        if flush:
            add_ratios(results, flush["commit_ms_median"])
        results.write(out)
        append_history(results, ROOT / "bench-results" / "history.jsonl")
        print_report(results)
        print(f"\nResults: {out}")
        if kept:
            print(f"Service logs of this run: {kept}")
    sys.exit(1 if results.errors else 0)


if __name__ == "__main__":
    main()
