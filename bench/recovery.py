"""`python -m bench.recovery`: the cost of recovery under a deep backlog (issue 11).

On a database and a redis-server of its own (slowlog threshold 1 ms), it inserts
`--jobs` jobs of the queue `bench` plus one urgent job, starts `python -m app.migrator`
(with its maintenance) and no worker, so the backlog waits in Redis. Once every job is
in Redis it pops the urgent job as a worker would and "dies" before its claim (no
claim, no outcome). Then, for `--duration` seconds, it measures:

- recovery: seconds from that pop until the lost job is back in its Redis list, ready
  for the next worker (it is the only urgent job, so its list's length says it);
- Redis latency: a PING every 20 ms on a connection of its own (p50, p99, max);
- Redis time of the maintenance: every command slower than 1 ms (SLOWLOG), the
  slowest, and their total.

For reference it first measures the PING latency of the idle redis-server for 20 s,
before anything else runs (`--control`): on a busy machine that floor, not Redis's
work, sets the p99.

`--baseline` pops with a plain RPOP (code without in-flight records: the lost job is
found by the old LPOS sweep after STALE_MIGRATED_AFTER). Not a test: it prints figures
and exits 0 when it could take them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

from app.db.setup import create_database, upgrade
from app.keys import Keys

ROOT = Path(__file__).resolve().parents[1]
QUEUE = "bench"
ADMIN = os.environ.get("TEST_DATABASE_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def start_redis(port: int, workdir: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            "--slowlog-log-slower-than",
            "1000",
            "--slowlog-max-len",
            "100000",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def start_migrator(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "app.migrator"], env=env, stdout=log, stderr=log, cwd=ROOT
        )


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait(probe: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if await probe():  # type: ignore[operator]
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def lose_one(redis: aioredis.Redis, keys: Keys, baseline: bool) -> None:
    """Pop the urgent job as a worker would, and never claim it."""
    if baseline:
        assert await redis.rpop(keys.route(QUEUE, 10))
        return
    from app.worker.fetch import Fetcher

    (popped,) = await Fetcher(redis, keys, [QUEUE]).pop(1)
    assert b'"priority" : 10' in popped.message or b'"priority": 10' in popped.message


async def ping_ms(client: aioredis.Redis, seconds: float) -> list[float]:
    """PING every 20 ms for `seconds`: the round trips in ms, sorted."""
    pings: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        await client.ping()
        pings.append((time.perf_counter() - t0) * 1000)
        await asyncio.sleep(0.02)
    return sorted(pings)


def describe(pings: list[float]) -> str:
    p99 = pings[max(0, int(len(pings) * 0.99) - 1)]
    return (
        f"p50 {statistics.median(pings):.2f}  p99 {p99:.2f}  max {pings[-1]:.2f}"
        f"  ({len(pings)} pings)"
    )


async def run(jobs: int, duration: float, baseline: bool, control: float) -> None:
    name = f"hq_benchrec_{uuid.uuid4().hex[:8]}"
    dsn = ADMIN.rsplit("/", 1)[0] + f"/{name}"
    await create_database(dsn)
    await asyncio.to_thread(upgrade, "postgresql+asyncpg://" + dsn.split("://", 1)[1])
    port = free_port()
    prefix = "hqrec:"
    keys = Keys(prefix)
    with tempfile.TemporaryDirectory() as tmp:
        server = start_redis(port, tmp)
        url = f"redis://127.0.0.1:{port}/0"
        redis = aioredis.Redis.from_url(url)
        probe = aioredis.Redis.from_url(url)
        migrator = None
        try:
            await wait(redis.ping, 10, "redis-server")
            floor = await ping_ms(probe, control) if control > 0 else []
            conn = await asyncpg.connect(dsn)
            await conn.execute(
                "INSERT INTO job_queues (name) VALUES ($1) ON CONFLICT DO NOTHING", QUEUE
            )
            await conn.execute(
                "INSERT INTO jobs (queue_name, payload, priority) "
                "SELECT $1, jsonb_build_object('n', g, 'pad', repeat('x', 180)), 100 "
                "FROM generate_series(1, $2) g",
                QUEUE,
                jobs - 1,
            )
            await conn.execute(
                "INSERT INTO jobs (queue_name, payload, priority) VALUES ($1, '{}', 10)", QUEUE
            )
            await conn.close()
            env = dict(os.environ)
            env.update(
                DATABASE_URL=dsn,
                REDIS_URL=url,
                REDIS_PREFIX=prefix,
                HANDLER_MODULES="bench.handlers",
                LOG_LEVEL="WARNING",
                PYTHONPATH=str(ROOT),
                REDIS_QUEUE_MAX_DEPTH=str(jobs),
            )
            migrator = start_migrator(env, Path(tmp) / "migrator.log")

            async def all_in_redis() -> bool:
                depth: int = sum([await redis.llen(k) for k in keys.queue_lists(QUEUE)])
                return depth >= jobs

            await wait(all_in_redis, 120, f"{jobs} jobs in Redis")
            await redis.slowlog_reset()
            await redis.config_resetstat()
            await lose_one(redis, keys, baseline)
            lost_at = time.monotonic()
            recovered: float | None = None
            pings: list[float] = []
            end = lost_at + duration
            while time.monotonic() < end:
                t0 = time.perf_counter()
                await probe.ping()
                pings.append((time.perf_counter() - t0) * 1000)
                if recovered is None and await probe.llen(keys.route(QUEUE, 10)) > 0:
                    recovered = time.monotonic() - lost_at
                await asyncio.sleep(0.02)
            slow = await redis.slowlog_get(100_000)
            stats = await redis.info("commandstats")
            depth = sum([await redis.llen(k) for k in keys.queue_lists(QUEUE)])
        finally:
            if migrator is not None:
                migrator.terminate()
                migrator.wait(30)
            await redis.aclose()
            await probe.aclose()
            server.kill()
            server.wait(10)
            admin = await asyncpg.connect(ADMIN)
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
    pings.sort()
    durations = [entry["duration"] / 1000 for entry in slow]  # µs -> ms
    commands: dict[str, int] = {}
    for entry in slow:
        cmd = entry["command"]
        text = cmd.decode(errors="replace") if isinstance(cmd, bytes) else str(cmd)
        word = text.split()[0].upper() if text.split() else "?"
        commands[word] = commands.get(word, 0) + 1
    mode = "baseline (RPOP, no in-flight record)" if baseline else "in-flight records"
    print(f"recovery bench: {mode}; {jobs} jobs waiting in Redis; {duration:g} s measured")
    back = "never" if recovered is None else f"{recovered:.1f} s"
    print(f"  lost job back in its list after: {back}")
    print(f"  Redis depth at the end: {depth}")
    if floor:
        print(f"  PING ms of the idle redis-server before the run: {describe(floor)}")
    print(f"  PING ms during the run: {describe(pings)}")
    busiest = sorted(stats.items(), key=lambda kv: -int(kv[1]["usec"]))[:6]
    print(
        "  Redis time by command during the run (INFO commandstats): "
        + ", ".join(
            f"{k.removeprefix('cmdstat_')} {v['calls']} calls {v['usec'] / 1000:.0f} ms "
            f"({v['usec_per_call']:.0f} µs each)"
            for k, v in busiest
        )
    )
    print(
        f"  SLOWLOG (> 1 ms): {len(durations)} commands, slowest "
        f"{max(durations, default=0):.1f} ms, total {sum(durations):.0f} ms; by command {commands}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.recovery", description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--baseline", action="store_true")
    parser.add_argument("--control", type=float, default=20.0, help="seconds; 0: none")
    args = parser.parse_args()
    asyncio.run(run(args.jobs, args.duration, args.baseline, args.control))


if __name__ == "__main__":
    main()
