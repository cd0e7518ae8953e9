"""Fault injection with real processes: a cluster of `python -m app.worker`,
`python -m app.migrator` (or the API with its embedded migrator), the faults, and the
checks that no job was lost and none completed twice.

Used by tests/chaos (1,000 jobs per scenario) and by `make chaos`:

    python -m tests.support.chaos --jobs 10000 --duration 120
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import redis.asyncio as aioredis

from app.keys import Keys

ROOT = Path(__file__).resolve().parents[2]
QUEUE = "t-chaos"


@dataclass
class Report:
    jobs: int
    faults: list[str]
    lost: int
    completed_twice: int
    executions: int
    recovery_seconds: float
    total_seconds: float

    @property
    def extra_executions(self) -> int:
        return self.executions - self.jobs

    def line(self) -> str:
        return (
            f"chaos: jobs={self.jobs} faults={len(self.faults)} lost={self.lost} "
            f"completed_twice={self.completed_twice} executions_beyond_one="
            f"{self.extra_executions} recovery_s={self.recovery_seconds:.1f} "
            f"total_s={self.total_seconds:.1f}"
        )


@dataclass
class Cluster:
    """Processes sharing one database and one Redis (URL + prefix)."""

    database_url: str
    redis_url: str
    workdir: Path
    prefix: str = field(default_factory=lambda: f"hqchaos:{uuid.uuid4().hex[:8]}:")
    handler_sleep: float = 0.02
    worker_concurrency: int = 4
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)
    last_fault_at: float = 0.0

    def __post_init__(self) -> None:
        self.records = self.workdir / "records"
        self.records.mkdir(parents=True, exist_ok=True)
        self.logs = self.workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.keys = Keys(self.prefix)

    def env(self, **overrides: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "PYTHONPATH": str(ROOT),
                "DATABASE_URL": self.database_url,
                "REDIS_URL": self.redis_url,
                "REDIS_PREFIX": self.prefix,
                "HANDLER_MODULES": "tests.support.chaos_handlers",
                "CHAOS_RECORD_DIR": str(self.records),
                "CHAOS_HANDLER_SLEEP": str(self.handler_sleep),
                "WORKER_CONCURRENCY": str(self.worker_concurrency),
                "VISIBILITY_TIMEOUT": "2",
                "MAINTENANCE_INTERVAL": "0.25",
                "STALL_REQUEUE_SPREAD": "0.5",
                "MIGRATOR_POLL_INTERVAL": "1",
                "MIGRATOR_BATCH_SIZE": "200",
                "BACKOFF_BASE": "0.1",
                "BACKOFF_MAX": "1",
                "BACKOFF_JITTER": "0.1",
                "WORKER_FETCH_TIMEOUT": "0.5",
                "SHUTDOWN_GRACE_PERIOD": "5",
                "DB_COMMAND_TIMEOUT": "3",
                "REDIS_TIMEOUT": "1",
                "LOG_LEVEL": "WARNING",
                "AUTH_ENABLED": "false",
            }
        )
        env.update(self.extra_env)
        env.update(overrides)
        return env

    def start(self, name: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - owned by the process
        proc = subprocess.Popen(
            [sys.executable, *args], env=self.env(**env), stdout=log, stderr=log, cwd=ROOT
        )
        log.close()
        self.procs[name] = proc
        return proc

    def start_worker(self, name: str, **env: str) -> subprocess.Popen[bytes]:
        return self.start(name, "-m", "app.worker", **env)

    def start_migrator(self, name: str = "migrator", **env: str) -> subprocess.Popen[bytes]:
        return self.start(name, "-m", "app.migrator", **env)

    def start_api(self, port: int, name: str = "api") -> subprocess.Popen[bytes]:
        return self.start(
            name, "-m", "app", "--port", str(port), EMBED_WORKER="false", EMBED_MIGRATOR="true"
        )

    def kill9(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        self.fault(f"kill -9 {name}")

    def fault(self, what: str) -> None:
        self.faults.append(what)
        self.last_fault_at = time.monotonic()

    def stop_all(self, timeout: float = 30) -> dict[str, int]:
        """SIGTERM every live process; their exit codes."""
        codes: dict[str, int] = {}
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = -9
        return codes

    def log_tail(self, lines: int = 30) -> str:
        out = []
        for path in sorted(self.logs.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)

    # --- PostgreSQL side ----------------------------------------------------------

    async def connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.database_url, timeout=5)

    async def create_queue(self) -> None:
        conn = await self.connect()
        try:
            await conn.execute(
                "INSERT INTO job_queues (name) VALUES ($1) ON CONFLICT DO NOTHING", QUEUE
            )
        finally:
            await conn.close()

    async def create_jobs(self, n: int) -> list[uuid.UUID]:
        """n jobs in one statement, spread over the three priority lists."""
        conn = await self.connect()
        try:
            rows = await conn.fetch(
                "INSERT INTO jobs (queue_name, payload, priority, max_attempts) "
                "SELECT $1, jsonb_build_object('n', g), (g * 7) % 300, 25 "
                "FROM generate_series(1, $2) g RETURNING id",
                QUEUE,
                n,
            )
        finally:
            await conn.close()
        return [r["id"] for r in rows]

    async def count_completed(self) -> int:
        try:
            conn = await self.connect()
        except (OSError, asyncpg.PostgresError):
            return -1
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM jobs WHERE queue_name = $1 AND status = 'completed'",
                    QUEUE,
                )
            )
        except (OSError, asyncpg.PostgresError):
            return -1
        finally:
            await conn.close()

    async def wait_completed(self, n: int, timeout: float) -> None:
        try:
            await wait_until(
                lambda: _ge(self.count_completed(), n),
                timeout,
                f"{n} jobs completed",
                self.log_tail,
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nstatuses: {await self.status_counts()}") from None

    async def status_counts(self) -> dict[str, int]:
        conn = await self.connect()
        try:
            rows = await conn.fetch(
                "SELECT status, count(*) AS n FROM jobs WHERE queue_name = $1 GROUP BY status",
                QUEUE,
            )
            return {r["status"]: r["n"] for r in rows}
        finally:
            await conn.close()

    # --- a scenario: start, break, finish -------------------------------------------

    async def start_jobs(
        self, n: int, *, api_port: int | None = None, workers: int = 2
    ) -> tuple[list[uuid.UUID], float]:
        """n jobs, then the migrator (or the API embedding it) and the workers; the job
        ids and the start time."""
        await self.create_queue()
        started = time.monotonic()
        ids = await self.create_jobs(n)
        if api_port is None:
            self.start_migrator()
        else:
            self.start_api(api_port)
        for i in range(1, workers + 1):
            self.start_worker(f"worker-{i}")
        return ids, started

    async def finish(self, ids: list[uuid.UUID], started: float, name: str) -> Report:
        """Wait for every job, check them (verify), stop every process (each must exit 0
        on SIGTERM) and print the scenario's figures."""
        await self.wait_completed(len(ids), timeout=90)
        report = await self.verify(ids, started)
        codes = self.stop_all()
        assert set(codes.values()) == {0}, codes
        print(f"\n[{name}] {report.line()}  faults: {', '.join(report.faults)}")
        return report

    # --- checks -------------------------------------------------------------------

    def executions(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for path in self.records.glob("*.log"):
            for line in path.read_text().splitlines():
                if line.strip():
                    counts[line.split()[0]] += 1
        return counts

    async def redis_depth(self, client: aioredis.Redis) -> int:
        return sum([await client.llen(k) for k in self.keys.queue_lists(QUEUE)])

    async def verify(self, job_ids: list[uuid.UUID], started: float) -> Report:
        """Every job completed once in PostgreSQL, ran at least once, and nothing is left
        in Redis; raises AssertionError naming what is wrong."""
        conn = await self.connect()
        try:
            statuses = await conn.fetch(
                "SELECT status, count(*) AS n FROM jobs WHERE id = ANY($1) GROUP BY status",
                job_ids,
            )
            completed_logs = await conn.fetch(
                "SELECT job_id, count(*) AS n FROM job_logs "
                "WHERE job_id = ANY($1) AND status = 'completed' GROUP BY job_id",
                job_ids,
            )
        finally:
            await conn.close()
        by_status = {r["status"]: r["n"] for r in statuses}
        completed = by_status.get("completed", 0)
        once = sum(1 for r in completed_logs if r["n"] == 1)
        twice = sum(1 for r in completed_logs if r["n"] > 1)
        runs = self.executions()
        never_ran = [j for j in job_ids if runs[str(j)] == 0]

        client = aioredis.Redis.from_url(self.redis_url)
        try:
            # Copies of finished jobs are dropped by the workers' claims: wait for that.
            await wait_until(lambda: _eq(self.redis_depth(client), 0), 30, "Redis lists to drain")
        finally:
            await client.aclose()

        report = Report(
            jobs=len(job_ids),
            faults=list(self.faults),
            lost=len(job_ids) - completed,
            completed_twice=twice,
            executions=sum(runs[str(j)] for j in job_ids),
            recovery_seconds=time.monotonic() - (self.last_fault_at or started),
            total_seconds=time.monotonic() - started,
        )
        assert by_status == {"completed": len(job_ids)}, f"statuses: {by_status}"
        assert once == len(job_ids), f"{once} jobs with exactly one completed log row"
        assert twice == 0, f"{twice} jobs completed twice"
        assert not never_ran, f"{len(never_ran)} jobs completed without running"
        return report


async def _ge(value: Awaitable[int], n: int) -> bool:
    return await value >= n


async def _eq(value: Awaitable[int], n: int) -> bool:
    return await value == n


async def wait_until(
    condition: Callable[[], Awaitable[bool]],
    timeout: float,
    what: str,
    context: Callable[[], str] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            extra = f"\n{context()}" if context else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")
        await asyncio.sleep(0.05)


async def post_during_outage(port: int, attempts: int = 5) -> list[int]:
    """POST /jobs while a backing service is down: the status codes answered."""
    codes = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=15) as client:
        for _ in range(attempts):
            r = await client.post("/jobs", json={"queue_name": QUEUE, "payload": {}})
            codes.append(r.status_code)
    return codes


# --- `make chaos`: the long version --------------------------------------------------


async def long_run(jobs: int, duration: float, seed: int | None) -> Report:
    """`jobs` jobs, random kills of workers and the migrator and a Redis flush spread
    over `duration` seconds, on a database and a redis-server of its own."""
    from app.db.setup import create_database, upgrade
    from tests.support.servers import PrivateRedis

    rng = random.Random(seed)
    name = f"hq_chaos_{uuid.uuid4().hex[:8]}"
    admin = os.environ.get(
        "TEST_DATABASE_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    dsn = admin.rsplit("/", 1)[0] + f"/{name}"
    await create_database(dsn)
    await asyncio.to_thread(upgrade, "postgresql+asyncpg://" + dsn.split("://", 1)[1])
    try:
        with PrivateRedis() as server, tempfile.TemporaryDirectory() as tmp:
            # Slow enough that the run lasts about `duration` on two worker processes.
            sleep = max(0.001, 0.8 * duration * 2 * 8 / jobs)
            cluster = Cluster(dsn, server.url, Path(tmp), handler_sleep=sleep, worker_concurrency=8)
            ids, started = await cluster.start_jobs(jobs)
            flushed = False
            deadline = started + duration
            while time.monotonic() < deadline and await cluster.count_completed() < jobs:
                await asyncio.sleep(rng.uniform(5, 15))
                fault = rng.choice(["worker", "worker", "migrator", "flush"])
                if fault == "flush" and not flushed:
                    client = aioredis.Redis.from_url(server.url)
                    await client.flushall()
                    await client.aclose()
                    cluster.fault("FLUSHALL")
                    flushed = True
                elif fault == "migrator":
                    cluster.kill9("migrator")
                    cluster.start_migrator()
                else:
                    victim = rng.choice(["worker-1", "worker-2"])
                    cluster.kill9(victim)
                    cluster.start_worker(victim)
            if not flushed:
                client = aioredis.Redis.from_url(server.url)
                await client.flushall()
                await client.aclose()
                cluster.fault("FLUSHALL")
            try:
                await cluster.wait_completed(jobs, timeout=max(120, duration))
                return await cluster.verify(ids, started)
            finally:
                cluster.stop_all()
    finally:
        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Long chaos run of hybridq")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    if args.jobs < 1 or args.duration <= 0:
        parser.error("--jobs and --duration must be positive")
    try:
        report = asyncio.run(long_run(args.jobs, args.duration, args.seed))
    except AssertionError as exc:
        print(f"chaos: FAILED: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
    print("faults: " + ", ".join(report.faults))
    print(report.line())


if __name__ == "__main__":
    main()
