"""Figures comparable across machines: the flush floor, ratios to it, and a history.

The flush floor is the time of one durable commit on this machine (a timed loop of
single-row INSERTs, each its own transaction with synchronous_commit on): an enqueue
that commits each job cannot beat it, so the speed figures are judged as ratios to it.
Every run appends one line (the medians, the floor, the commit of the code) to
`bench-results/history.jsonl`, which is kept in git: the next change is compared with
this one.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench.report import Results

FLUSH_COMMITS = 300
# The same commit paced as the latency scenario's enqueues are (one every 10 ms): an idle
# client and server each wake for it, so it takes longer than back to back, and it is
# the floor of an idle job's latency (its INSERT commits before the job can run).
PACED_COMMITS = 100  # also the count of the latency scenario's paced round trips
PACED_GAP = 0.01

# (scenario, metric, name of the ratio, how the ratio is made, target, direction)
# "floor": figure in jobs/s times the commit time (jobs per flush time); "flushes":
# figure in ms divided by the commit time.
RATIOS: tuple[tuple[str, str, str, str, float, str], ...] = (
    ("enqueue-one", "jobs/s", "enqueue-one, share of the flush floor rate", "floor", 0.7, ">="),
    ("enqueue-bulk", "jobs/s", "enqueue-bulk, jobs per flush time", "floor", 10.0, ">="),
    ("http", "POST /jobs (raw)", "POST /jobs, requests per flush time", "floor", 1.0, ">="),
    ("drain", "jobs/s", "drain, jobs per flush time", "floor", 1.0, ">="),
    (
        "latency",
        "enqueue→start p50 (embedded)",
        "idle latency p50, in flush times",
        "flushes",
        10.0,
        "<=",
    ),
)


async def flush_floor(dsn: str) -> dict[str, float]:
    """Median and p90 of FLUSH_COMMITS durable single-row commits back to back (ms), and
    the median of PACED_COMMITS of them, one every PACED_GAP s."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS bench_flush (n int)")
        await conn.execute("SET synchronous_commit = on")
        times: list[float] = []
        for i in range(FLUSH_COMMITS + 20):
            t = time.perf_counter()
            await conn.execute("INSERT INTO bench_flush VALUES (1)")
            if i >= 20:
                times.append((time.perf_counter() - t) * 1000)
        paced = await paced_ms(lambda: conn.execute("INSERT INTO bench_flush VALUES (1)"))
        await conn.execute("DROP TABLE bench_flush")
    finally:
        await conn.close()
    times.sort()
    return {
        "commit_ms_median": statistics.median(times),
        "commit_ms_p90": times[int(len(times) * 0.9)],
        "commits": float(FLUSH_COMMITS),
        "paced_commit_ms_median": statistics.median(paced),
    }


async def paced_ms(
    call: Callable[[], Awaitable[object]], count: int = PACED_COMMITS, gap: float = PACED_GAP
) -> list[float]:
    """The times (ms) of `count` calls, one every `gap` s, as an idle client makes them."""
    times: list[float] = []
    for _ in range(count):
        await asyncio.sleep(gap)
        t = time.perf_counter()
        await call()
        times.append((time.perf_counter() - t) * 1000)
    return times


def add_ratios(results: Results, commit_ms: float) -> None:
    """The speed figures as ratios to the flush floor, with their targets."""
    for scenario, name, label, kind, target, direction in RATIOS:
        found = results.find(scenario, name)
        if found is None or not found.values:
            continue
        metric = results.metric(scenario, label, "x", target, direction)  # type: ignore[arg-type]
        for v in found.values:
            metric.values.append(v * commit_ms / 1000 if kind == "floor" else v / commit_ms)


def append_history(results: Results, path: Path) -> None:
    """One line per run: when, which code, the machine's floor, every median."""
    line: dict[str, Any] = {
        "started": results.meta.get("started"),
        "commit": results.meta.get("commit"),
        "cpus": results.meta.get("cpu_count"),
        "flush": results.meta.get("flush"),
        "options": results.meta.get("options"),
        "figures": {
            f"{m.scenario}: {m.name} ({m.unit})": round(m.median, 4)
            for m in results.metrics
            if m.values
        },
        "errors": results.errors or None,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as f:
        f.write(orjson.dumps(line) + b"\n")
