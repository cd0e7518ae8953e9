"""The benchmark's own world: a database, a Redis prefix, service subprocesses, /proc."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
import redis.asyncio as aioredis

from app.db.setup import upgrade
from app.settings import Settings
from bench.handlers import QUEUE

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    """Progress on stderr (the report goes to stdout)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class ScenarioError(Exception):
    """A scenario could not produce a figure (a timeout, a failed check)."""


# --- payloads -------------------------------------------------------------------------

PAYLOAD_BYTES = 200


def payload(i: int) -> dict[str, Any]:
    """A job payload of about 200 bytes of JSON, like a small e-mail job."""
    body: dict[str, Any] = {
        "to": f"user-{i:07d}@example.com",
        "campaign_id": f"c-{i % 1000:04d}",
        "template": "welcome",
        "vars": {"name": f"User {i}", "plan": "pro"},
        "pad": "",
    }
    body["pad"] = "x" * max(0, PAYLOAD_BYTES - len(orjson.dumps(body)))
    return body


# The same ~200-byte payload built in SQL, from the integer `g` of a generate_series.
SQL_PAYLOAD = """jsonb_build_object(
    'to', 'user-' || lpad(g::text, 7, '0') || '@example.com',
    'campaign_id', 'c-' || lpad((g % 1000)::text, 4, '0'),
    'template', 'welcome',
    'vars', jsonb_build_object('name', 'User ' || g, 'plan', 'pro'),
    'pad', repeat('x', {pad}))"""


def sql_payload() -> str:
    pad = len(payload(1_000_000)["pad"])
    return SQL_PAYLOAD.format(pad=pad)


# --- the database and the Redis prefix --------------------------------------------------


def _dsn_with_db(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


@dataclass(slots=True)
class BenchEnv:
    """One benchmark run's database (`hq_bench_<id>`), Redis prefix and scratch dir."""

    admin_dsn: str
    redis_url: str
    workdir: Path
    overrides: dict[str, str] = field(default_factory=dict)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def db_name(self) -> str:
        return f"hq_bench_{self.run_id}"

    @property
    def dsn(self) -> str:
        return _dsn_with_db(self.admin_dsn, self.db_name)

    @property
    def prefix(self) -> str:
        return f"hqbench:{self.run_id}:"

    async def create(self) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{self.db_name}"')
        finally:
            await conn.close()
        await asyncio.to_thread(upgrade, Settings(database_url=self.dsn).sqlalchemy_url)
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(
                "INSERT INTO job_queues (name) VALUES ($1) ON CONFLICT DO NOTHING", QUEUE
            )
        finally:
            await conn.close()

    async def drop(self) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        finally:
            await conn.close()

    async def clear_redis(self, redis: aioredis.Redis) -> int:
        keys = [k async for k in redis.scan_iter(match=f"{self.prefix}*", count=1000)]
        for i in range(0, len(keys), 1000):
            await redis.delete(*keys[i : i + 1000])
        return len(keys)

    def service_env(self, **extra: str) -> dict[str, str]:
        """Environment of a service subprocess: the bench database, prefix and handlers."""
        env = dict(os.environ)
        env.update(
            DATABASE_URL=self.dsn,
            REDIS_URL=self.redis_url,
            REDIS_PREFIX=self.prefix,
            HANDLER_MODULES="bench.handlers",
            # The API as deployed: a producer key, stored hashed, sent by every client.
            API_KEYS=f"bench:producer:sha256:{hashlib.sha256(BENCH_KEY.encode()).hexdigest()}",
            PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        )
        env.update(self.overrides)
        env.update(extra)
        return env


BENCH_KEY = "bench-producer-key"


async def reset_jobs(conn: asyncpg.Connection | asyncpg.Pool) -> None:
    await conn.execute("TRUNCATE jobs, job_logs")


async def insert_queued(conn: asyncpg.Connection, n: int) -> list[uuid.UUID]:
    """N due jobs for the bench queue in one INSERT ... SELECT generate_series."""
    rows = await conn.fetch(
        f"""
        INSERT INTO jobs (queue_name, payload)
        SELECT $1, {sql_payload()} FROM generate_series(1, $2) g
        RETURNING id
        """,
        QUEUE,
        n,
    )
    return [r["id"] for r in rows]


async def job_outcome(
    conn: asyncpg.Connection | asyncpg.Pool, ids: list[uuid.UUID]
) -> tuple[int, int, int]:
    """(completed jobs, all job_logs rows, completed job_logs rows) of these ids."""
    completed = await conn.fetchval(
        "SELECT count(*) FROM jobs WHERE id = ANY($1::uuid[]) AND status = 'completed'", ids
    )
    row = await conn.fetchrow(
        "SELECT count(*), count(*) FILTER (WHERE status = 'completed') FROM job_logs "
        "WHERE job_id = ANY($1::uuid[])",
        ids,
    )
    assert row is not None
    return int(completed), int(row[0]), int(row[1])


PENDING_OF = (
    "SELECT count(*) FROM jobs WHERE id = ANY($1::uuid[]) "
    "AND status IN ('scheduled', 'queued', 'migrated_to_redis', 'running')"
)
PENDING = (
    "SELECT count(*) FROM jobs "
    "WHERE status IN ('scheduled', 'queued', 'migrated_to_redis', 'running')"
)


# --- waiting ----------------------------------------------------------------------------


async def wait_until(
    check: Callable[[], Awaitable[bool]], *, timeout: float, what: str, interval: float = 0.05
) -> float:
    """Poll until `check()` holds; ScenarioError after `timeout` seconds. Returns the wait."""
    t0 = time.monotonic()
    while not await check():
        if time.monotonic() - t0 > timeout:
            raise ScenarioError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)
    return time.monotonic() - t0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- service subprocesses and /proc -------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status_kib(pid: int, key: str) -> int | None:
    """A `kB` line of /proc/<pid>/status (VmHWM: peak RSS, VmRSS: current RSS)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def system_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])
    return (total - idle) / CLK_TCK, total / CLK_TCK


def _server_processes(db_name: str) -> dict[int, str]:
    """PostgreSQL and Redis processes by role: `postgres` (backends of the bench
    database), `postgres-shared` (checkpointer, WAL writer, ...), `redis`. Backends of
    other databases are left out: they are someone else's load."""
    out: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            if comm == "redis-server":
                out[int(entry.name)] = "redis"
            elif comm == "postgres":
                title = (
                    (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                )
                if f" {db_name} " in title:
                    out[int(entry.name)] = "postgres"
                elif "(" not in title and "[local]" not in title:
                    # no client address: the postmaster or a background process
                    out[int(entry.name)] = "postgres-shared"
        except OSError:
            continue
    return out


class CpuMeter:
    """Where the machine's CPU went between `start()` and `stop()`: our service
    processes, PostgreSQL (the bench database's backends and the shared background
    processes), Redis, the bench process itself, and everything else ("other load":
    processes of other users of the machine, which make every figure lower)."""

    def __init__(self, db_name: str, services: list[Service]) -> None:
        self.db_name = db_name
        self.services = services
        self._t0 = 0.0
        self._busy0 = self._total0 = 0.0
        self._bench0 = 0.0
        self._svc0: dict[int, float] = {}
        self._srv0: dict[int, tuple[str, float]] = {}
        self.seconds: dict[str, float] = {}

    def start(self) -> None:
        self._svc0 = {s.pid: s.cpu_seconds() for s in self.services}
        self._srv0 = {
            pid: (role, proc_cpu_seconds(pid))
            for pid, role in _server_processes(self.db_name).items()
        }
        self._bench0 = time.process_time()
        self._busy0, self._total0 = system_busy_seconds()
        self._t0 = time.monotonic()

    def stop(self) -> dict[str, float]:
        """CPU per role as a share of the whole machine (all cores), in %."""
        busy1, total1 = system_busy_seconds()
        bench = time.process_time() - self._bench0
        roles: dict[str, float] = {}
        for s in self.services:
            role = s.name.split("-", 1)[-1].rstrip("0123456789") or s.name
            roles[role] = roles.get(role, 0.0) + s.cpu_seconds() - self._svc0.get(s.pid, 0.0)
        for pid, role in _server_processes(self.db_name).items():
            before = self._srv0.get(pid, (role, 0.0))[1]
            roles[role] = roles.get(role, 0.0) + proc_cpu_seconds(pid) - before
        roles["bench"] = bench
        self.seconds = dict(roles)  # CPU seconds per role, for per-job costs
        window = total1 - self._total0
        if window <= 0:
            return {}
        busy = busy1 - self._busy0
        shares = {k: 100 * v / window for k, v in roles.items()}
        shares["other load"] = max(0.0, 100 * (busy - sum(roles.values())) / window)
        shares["idle"] = max(0.0, 100 * (1 - busy / window))
        return shares


@dataclass(slots=True)
class Service:
    """A service process the benchmark started (`python -m app...`)."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    # Exit codes of a clean stop. uvicorn re-raises SIGTERM after its graceful
    # shutdown, so the API ends with -15 where the other entrypoints exit 0.
    clean_exits: tuple[int, ...] = (0,)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def peak_rss_mib(self) -> float | None:
        kib = proc_status_kib(self.pid, "VmHWM")
        return None if kib is None else kib / 1024

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise ScenarioError(
                f"{self.name} (pid {self.pid}) exited with {code}; log tail:\n{self.log_tail()}"
            )

    async def stop(self, timeout: float = 45.0) -> int:
        """SIGTERM, then wait; SIGKILL and ScenarioError if it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        while self.proc.poll() is None:
            if time.monotonic() - t0 > timeout:
                self.kill()
                raise ScenarioError(f"{self.name} did not exit within {timeout:g}s of SIGTERM")
            await asyncio.sleep(0.02)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)


def start_service(name: str, args: list[str], env: Mapping[str, str], log_dir: Path) -> Service:
    log_path = log_dir / f"{name}.log"
    log = log_path.open("ab")
    try:
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    finally:
        log.close()
    return Service(name=name, proc=proc, log_path=log_path)


async def stop_all(services: list[Service], timeout: float = 45.0) -> list[str]:
    """Stop services concurrently; the problems (not exiting, non-zero exit) as text."""
    results = await asyncio.gather(*(s.stop(timeout) for s in services), return_exceptions=True)
    problems = []
    for s, r in zip(services, results, strict=True):
        if isinstance(r, BaseException):
            problems.append(str(r))
        elif r not in s.clean_exits:
            problems.append(f"{s.name} exited with {r}; log tail:\n{s.log_tail()}")
    return problems


# --- what the servers ran with ----------------------------------------------------------

PG_SETTINGS = (
    "server_version",
    "fsync",
    "synchronous_commit",
    "shared_buffers",
    "max_connections",
    "wal_level",
    "work_mem",
    "max_wal_size",
    "autovacuum",
)
REDIS_SETTINGS = ("maxmemory-policy", "appendonly", "appendfsync", "save", "io-threads")


async def server_settings(conn: asyncpg.Connection, redis: aioredis.Redis) -> dict[str, Any]:
    pg: dict[str, str] = {}
    for name in PG_SETTINGS:
        pg[name] = str(await conn.fetchval(f"SHOW {name}"))
    info = await redis.info("server")
    rd: dict[str, str] = {"redis_version": str(info.get("redis_version"))}
    for name in REDIS_SETTINGS:
        try:
            value = (await redis.config_get(name)).get(name)
        except Exception as exc:  # CONFIG may be disabled
            value = f"? ({exc})"
        rd[name] = value.decode() if isinstance(value, bytes) else str(value)
    return {"postgresql": pg, "redis": rd, "cpu_count": os.cpu_count()}
