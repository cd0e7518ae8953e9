"""The scenarios. Each records its figures in `Results`; a failure raises ScenarioError."""

from __future__ import annotations

import array
import asyncio
import contextlib
import functools
import math
import os
import shutil
import signal
import statistics
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import redis.asyncio as aioredis

from app.db import hot as sql
from app.db.inserts import insert_jobs
from app.db.recovery import RecoveryStore
from app.db.rows import NewJob
from app.jobs.model import JobToInsert
from app.keys import Keys
from app.maintenance.reconcile import RedisReconciler
from app.settings import Settings
from bench.env import (
    BENCH_KEY,
    PENDING,
    PENDING_OF,
    BenchEnv,
    CpuMeter,
    ScenarioError,
    Service,
    free_port,
    insert_queued,
    job_outcome,
    log,
    payload,
    reset_jobs,
    sql_payload,
    start_service,
    stop_all,
    wait_until,
)
from bench.handlers import QUEUE
from bench.history import paced_ms
from bench.producer import EnqueueMany, EnqueueOne, Producer
from bench.profile import PySpy, summarize
from bench.report import Metric, Results, percentile

# Speed has no absolute target: absolute figures do not carry between machines (disks
# of the same kind differ several times in flush time). bench/history.py judges them as
# ratios to this machine's flush floor; peers-bench judges them against the peers.
DRAIN_TARGET: float | None = None
ENQUEUE_ONE_TARGET: float | None = None
ENQUEUE_BULK_TARGET: float | None = None
HTTP_TARGET: float | None = None
LATENCY_P50_TARGET: float | None = None
LATENCY_P99_TARGET: float | None = None
BIG_TABLE_SLOWDOWN = 1.2  # query time at most 20% above the empty table's
BIG_TABLE_DRAIN_RATIO = 0.8  # drain rate at least 80% of the empty table's
RSS_TARGET = 35.0  # MiB: memory does not depend on the disk; the bound
QUIET_LOAD = 10.0  # % of the machine other processes may use when a timed section starts
NEXT_DUE_REPS = 201  # EXPLAIN samples of SECONDS_UNTIL_NEXT_DUE (a ~20 µs query)


@dataclass(slots=True)
class Options:
    jobs: int
    runs: int
    big_table_rows: int
    latency_samples: int
    timeout: float
    bulk_batch: int
    http_clients: int
    http_client_kinds: list[str]
    workers: int
    quiet_wait: float
    py_spy: bool
    query_reps: int = 7
    backlog_scale: float = 1.0


@dataclass(slots=True)
class Ctx:
    env: BenchEnv
    opts: Options
    pool: asyncpg.Pool
    redis: aioredis.Redis
    results: Results
    log_dir: Path
    producer: Producer = field(init=False)

    @contextlib.asynccontextmanager
    async def conn(self) -> AsyncIterator[asyncpg.Connection]:
        """A plain connection (no JSON codecs): EXPLAIN output stays text."""
        conn = await asyncpg.connect(self.env.dsn)
        try:
            yield conn
        finally:
            await conn.close()

    async def clean_slate(self) -> None:
        """No job in PostgreSQL or Redis, and Redis marked whole by the reconciler's own
        pass (the epoch marker), as a running service's maintenance leaves it: without the
        marker (Redis lost its data) a producer does not take the direct path."""
        await reset_jobs(self.pool)
        await self.env.clear_redis(self.redis)
        settings = Settings(database_url=self.env.dsn, redis_prefix=self.env.prefix)
        keys = Keys(self.env.prefix)
        await RedisReconciler(RecoveryStore(self.pool), self.redis, keys, settings).run_once()

    async def settle(self, services: list[Service] | None = None) -> None:
        """Before a timed section: write out what earlier sections left dirty (CHECKPOINT,
        then the OS's sync), so that their writeback does not slow this one's commits (it
        did: idle latency p50 1.6 ms alone, 2.3 ms right after the http scenario); then
        wait (at most `quiet_wait` s) until other processes leave the machine alone."""
        await self.pool.execute("CHECKPOINT")
        await asyncio.to_thread(os.sync)
        deadline = time.monotonic() + self.opts.quiet_wait
        waited = False
        while self.opts.quiet_wait > 0:
            meter = CpuMeter(self.env.db_name, services or [])
            meter.start()
            await asyncio.sleep(0.5)
            other = meter.stop().get("other load", 0.0)
            if other <= QUIET_LOAD:
                if waited:
                    log(f"  other load down to {other:.0f}%")
                return
            if time.monotonic() > deadline:
                log(f"  other load still {other:.0f}% of the machine: measuring anyway")
                return
            if not waited:
                log(f"  other processes use {other:.0f}% of the machine: waiting for quiet")
                waited = True

    def jobs(self, n: int, start: int = 0) -> list[NewJob]:
        return [NewJob(queue_name=QUEUE, payload=payload(start + i)) for i in range(n)]


async def _count_jobs(ctx: Ctx) -> int:
    value: int = await ctx.pool.fetchval("SELECT count(*) FROM jobs")
    return value


# --- enqueue ---------------------------------------------------------------------------


Calls = list[Callable[[], Awaitable[object]]]


async def enqueue_one(ctx: Ctx) -> None:
    p = ctx.producer
    ctx.results.note("enqueue-one", f"path: {p.one_label}; one producer, sequential")
    ctx.results.note("enqueue-one", f"reference path: {p.tx_one_label}")

    def calls(one: EnqueueOne) -> Callable[[list[NewJob]], Calls]:
        return lambda jobs: [functools.partial(one, job) for job in jobs]

    await _enqueue_paths(
        ctx, "enqueue-one", ENQUEUE_ONE_TARGET, [calls(p.one), calls(p.tx_one)], warm=50
    )


async def enqueue_bulk(ctx: Ctx) -> None:
    batch = ctx.opts.bulk_batch
    p = ctx.producer
    ctx.results.note(
        "enqueue-bulk", f"path: {p.many_label}; {batch} jobs per statement, one producer"
    )
    ctx.results.note("enqueue-bulk", f"reference path: {p.tx_many_label}")

    def calls(many: EnqueueMany) -> Callable[[list[NewJob]], Calls]:
        return lambda jobs: [
            functools.partial(many, jobs[i : i + batch]) for i in range(0, len(jobs), batch)
        ]

    await _enqueue_paths(
        ctx,
        "enqueue-bulk",
        ENQUEUE_BULK_TARGET,
        [calls(p.many), calls(p.tx_many)],
        warm=min(batch, 100),
    )


async def _enqueue_paths(
    ctx: Ctx,
    scenario: str,
    target: float | None,
    paths: list[Callable[[list[NewJob]], Calls]],
    *,
    warm: int,
) -> None:
    """The target path, then the reference path (in a SQLAlchemy transaction): N jobs
    per run through the calls each makes, after `warm` jobs to fill pools and caches."""
    names = [("jobs/s", target), ("jobs/s (in a SQLAlchemy transaction)", None)]
    for (name, goal), make_calls in zip(names, paths, strict=True):
        metric = ctx.results.metric(scenario, name, "jobs/s", goal, ">=")
        for run in range(ctx.opts.runs):
            await ctx.clean_slate()
            for call in make_calls(ctx.jobs(warm, start=10_000_000)):
                await call()
            await ctx.clean_slate()
            elapsed = await _timed(ctx, scenario, make_calls(ctx.jobs(ctx.opts.jobs)), run)
            metric.values.append(ctx.opts.jobs / elapsed)


async def _timed(ctx: Ctx, label: str, calls: Calls, run: int) -> float:
    """Await the calls one after the other; seconds taken. Checks every job landed."""
    expected = ctx.opts.jobs
    meter = CpuMeter(ctx.env.db_name, [])
    await ctx.settle()
    meter.start()
    t0 = time.perf_counter()
    for call in calls:
        await call()
    elapsed = time.perf_counter() - t0
    _record_cpu(ctx, label, meter.stop())
    count = await _count_jobs(ctx)
    if count != expected:
        raise ScenarioError(f"run {run + 1}: {count} jobs in PostgreSQL, expected {expected}")
    return elapsed


# --- HTTP ------------------------------------------------------------------------------


HEADERS = {"content-type": "application/json", "authorization": f"Bearer {BENCH_KEY}"}


@dataclass(slots=True)
class _HttpLoad:
    """Request bodies shared by the client tasks, and what came back."""

    bodies: list[bytes]
    next_i: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)

    def take(self) -> bytes | None:
        if self.next_i >= len(self.bodies):
            return None
        body = self.bodies[self.next_i]
        self.next_i += 1
        return body

    def answered(self, started: float, status: int, body: bytes) -> None:
        self.latencies.append(time.perf_counter() - started)
        self.statuses[status] += 1
        if status == 201:
            self.ids.append(orjson.loads(body)["job_id"])


class HttpxClient:
    """One httpx.AsyncClient with one keep-alive connection."""

    def __init__(self, base: str) -> None:
        self.client = httpx.AsyncClient(
            base_url=base, timeout=30, limits=httpx.Limits(max_connections=1)
        )

    async def post(self, body: bytes) -> tuple[int, bytes]:
        r = await self.client.post("/jobs", content=body, headers=HEADERS)
        return r.status_code, r.content

    async def close(self) -> None:
        await self.client.aclose()


class RawClient:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams: a fraction of httpx's
    CPU per request, so the measuring process takes less of the machine."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> tuple[int, bytes]:
        if (
            self.writer is None
            or self.writer.is_closing()
            or (self.reader is not None and self.reader.at_eof())
        ):
            await self.close()  # the server closed an idle connection: open another
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(
            b"POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s"
            % (BENCH_KEY.encode(), len(body), body)
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
            self.reader = self.writer = None


async def _client_loop(load: _HttpLoad, client: HttpxClient | RawClient) -> None:
    while (body := load.take()) is not None:
        t = time.perf_counter()
        status, answer = await client.post(body)
        load.answered(t, status, answer)


async def http(ctx: Ctx) -> None:
    n, clients = ctx.opts.jobs, ctx.opts.http_clients
    res = ctx.results
    port = free_port()
    env = ctx.env.service_env(EMBED_MIGRATOR="false", EMBED_WORKER="false")
    api = start_service("api", ["-m", "app", "--port", str(port)], env, ctx.log_dir)
    api.clean_exits = (0, -signal.SIGTERM)
    base = f"http://127.0.0.1:{port}"
    res.note(
        "http",
        f"{clients} concurrent client tasks (one keep-alive connection each) in the bench "
        "process until N requests; API: `python -m app` (uvicorn, its access log on), "
        "migrator and worker off. Target judged on the raw clients (a minimal HTTP/1.1 "
        "client on asyncio streams, ~0.03 ms CPU per request): on 2 cores the load "
        "generator's CPU is taken from the server. The httpx clients are for reference: "
        "at ~0.56 ms CPU per request, one Python process of them cannot issue more than "
        "~1,800 requests/s whatever the server does",
    )
    try:
        async with httpx.AsyncClient(base_url=base, timeout=5) as probe:

            async def healthy() -> bool:
                api.check_alive()
                try:
                    return (await probe.get("/health/ready")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(healthy, timeout=ctx.opts.timeout, what="the API's /health/ready")
        bodies = [orjson.dumps({"queue_name": QUEUE, "payload": payload(i)}) for i in range(n)]
        for kind in ctx.opts.http_client_kinds:
            label = f"({kind})"
            target = HTTP_TARGET if kind == "raw" else None
            rate = res.metric("http", f"POST /jobs {label}", "req/s", target, ">=")
            p50 = res.metric("http", f"request p50 {label}", "ms")
            p99 = res.metric("http", f"request p99 {label}", "ms")
            client_cpu = res.metric("http", f"client CPU per request {label}", "ms")
            for run in range(ctx.opts.runs):
                await _http_run(ctx, kind, port, bodies, run, api, (rate, p50, p99, client_cpu))

        # Each 201 comes after the commit: read the job from another connection at once.
        async with httpx.AsyncClient(base_url=base, timeout=5) as c:
            for i in range(50):
                r = await c.post("/jobs", content=bodies[i], headers=HEADERS)
                job_id = uuid.UUID(r.json()["job_id"])
                if not await ctx.pool.fetchval("SELECT 1 FROM jobs WHERE id = $1", job_id):
                    raise ScenarioError(f"job {job_id} was answered 201 but is not visible yet")
        res.note(
            "http",
            "checked: every answer 201, every answered job in PostgreSQL, and 50 jobs "
            "visible from another connection the moment their 201 arrived",
        )
    finally:
        for p in await stop_all([api]):
            res.error("http", p)


async def _http_run(
    ctx: Ctx,
    kind: str,
    port: int,
    bodies: list[bytes],
    run: int,
    api: Service,
    metrics: tuple[Metric, Metric, Metric, Metric],
) -> None:
    n = len(bodies)
    rate, p50, p99, client_cpu = metrics
    await reset_jobs(ctx.pool)
    base = f"http://127.0.0.1:{port}"
    clients: list[HttpxClient | RawClient] = [
        HttpxClient(base) if kind == "httpx" else RawClient(port)
        for _ in range(ctx.opts.http_clients)
    ]
    meter = CpuMeter(ctx.env.db_name, [api])
    try:
        await ctx.settle([api])
        # Warm-up: every client opens its connection, the API fills its pool. (After
        # the settling: uvicorn closes connections idle for 5 s.)
        await asyncio.gather(*(c.post(bodies[0]) for c in clients))
        await reset_jobs(ctx.pool)
        load = _HttpLoad(bodies)
        meter.start()
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        await asyncio.wait_for(
            asyncio.gather(*(_client_loop(load, c) for c in clients)), ctx.opts.timeout
        )
        elapsed = time.perf_counter() - t0
        cpu1 = time.process_time()
        shares = meter.stop()
    except TimeoutError as exc:
        raise ScenarioError(
            f"{kind} run {run + 1}: {n} requests did not finish in {ctx.opts.timeout:g}s"
        ) from exc
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    if load.statuses != Counter({201: n}):
        raise ScenarioError(
            f"{kind} run {run + 1}: answers {dict(load.statuses)}, expected 201 x{n}"
        )
    found = await ctx.pool.fetchval(
        "SELECT count(*) FROM jobs WHERE id = ANY($1::uuid[])", [uuid.UUID(i) for i in load.ids]
    )
    if found != n:
        raise ScenarioError(f"{kind} run {run + 1}: {found} of {n} answered jobs in PostgreSQL")
    rate.values.append(n / elapsed)
    p50.values.append(percentile(load.latencies, 50) * 1e3)
    p99.values.append(percentile(load.latencies, 99) * 1e3)
    client_cpu.values.append((cpu1 - cpu0) / n * 1e3)
    _record_cpu(ctx, f"http ({kind})", shares)


def _record_cpu(ctx: Ctx, label: str, shares: dict[str, float]) -> None:
    """Keep the CPU shares of a timed section; "other load" also goes in the table."""
    if not shares:
        return
    ctx.results.details.setdefault("cpu_pct", {}).setdefault(label, []).append(shares)
    scenario = label.split(" ", 1)[0]
    ctx.results.metric(
        scenario, f"other load on the machine{label[len(scenario) :]}", "%"
    ).values.append(shares["other load"])


# --- latency ---------------------------------------------------------------------------


async def _wait_ready(ctx: Ctx, workers: list[Service], migrator: Service | None) -> None:
    index = ctx.env.prefix + "workers"

    async def ready() -> bool:
        for s in [*workers, *([migrator] if migrator else [])]:
            s.check_alive()
        if await ctx.redis.zcard(index) < len(workers):
            return False
        if migrator is None:
            return True
        listening = await ctx.pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'LISTEN %'",
            ctx.env.db_name,
        )
        return bool(listening)

    what = "the workers' heartbeats" + (" and the migrator's LISTEN" if migrator else "")
    await wait_until(ready, timeout=ctx.opts.timeout, what=what)


LATENCY_LAYOUTS = {
    "embedded": "`python -m app`, the default deployment: API, migrator and worker in one process",
    "separate": "`python -m app.migrator` and `python -m app.worker`, two processes",
}


async def latency(ctx: Ctx) -> None:
    ctx.results.note(
        "latency",
        f"{ctx.opts.latency_samples} samples per run, one job at a time through "
        f"{ctx.producer.one_label}, idle between samples; latency = handler's time.time() "
        "at start - time.time() just before the enqueue call. Layouts: "
        + "; ".join(f"{name}: {what}" for name, what in LATENCY_LAYOUTS.items()),
    )
    await _paced_round_trips(ctx)
    for layout in LATENCY_LAYOUTS:
        await _latency_layout(ctx, layout)


async def _paced_round_trips(ctx: Ctx) -> None:
    """The floors of an idle job's latency, paced as its samples are (one every 10 ms):
    a Redis round trip (PING) and the INSERT of one job row with its commit (the
    migrator's path, nothing pushed). The direct path's enqueue makes one of each, and
    the push and the claim one more each, before the handler can start."""
    await reset_jobs(ctx.pool)

    row = JobToInsert(queue_name=QUEUE, payload_json=orjson.dumps(payload(0)).decode())
    for _ in range(20):  # warm-up: connections, statement caches
        await insert_jobs(ctx.pool.fetch, [row], key_ttl=0)
    await ctx.settle()

    async def insert() -> None:
        await insert_jobs(ctx.pool.fetch, [row], key_ttl=0)

    for name, call in (("Redis round trip (PING)", ctx.redis.ping), ("job INSERT", insert)):
        times = await paced_ms(call)
        metric = ctx.results.metric("latency", f"paced {name}, p50", "ms")
        metric.values.append(percentile(times, 50))
    await reset_jobs(ctx.pool)


async def _latency_layout(ctx: Ctx, layout: str) -> None:
    res = ctx.results
    samples = ctx.opts.latency_samples
    label = f"({layout})"
    p50 = res.metric("latency", f"enqueue→start p50 {label}", "ms", LATENCY_P50_TARGET, "<=")
    p99 = res.metric("latency", f"enqueue→start p99 {label}", "ms", LATENCY_P99_TARGET, "<=")
    call = res.metric("latency", f"of which the enqueue call, p50 {label}", "ms")
    claim = res.metric("latency", f"insert→claim (PostgreSQL clock), p50 {label}", "ms")
    key = ctx.env.prefix + "bench:latency"
    await reset_jobs(ctx.pool)
    await ctx.env.clear_redis(ctx.redis)
    env = ctx.env.service_env(BENCH_MODE="latency", BENCH_LATENCY_KEY=key)
    if layout == "embedded":
        api = start_service(
            "latency-api", ["-m", "app", "--port", str(free_port())], env, ctx.log_dir
        )
        api.clean_exits = (0, -signal.SIGTERM)
        services, workers, migrator = [api], [api], api
    else:
        worker = start_service("latency-worker", ["-m", "app.worker"], env, ctx.log_dir)
        migrator = start_service("latency-migrator", ["-m", "app.migrator"], env, ctx.log_dir)
        services, workers = [worker, migrator], [worker]
    one = ctx.producer.one
    try:
        await _wait_ready(ctx, workers, migrator)

        enqueue_ms: list[float] = []

        async def sample(i: int) -> float:
            job = NewJob(queue_name=QUEUE, payload=payload(i))
            t0 = time.time()
            await one(job)
            enqueue_ms.append((time.time() - t0) * 1e3)
            got = await ctx.redis.blpop([key], timeout=10)
            if got is None:
                for s in services:
                    s.check_alive()
                raise ScenarioError(f"{layout}: job {i} did not start within 10s")
            start = float(got[1])
            await asyncio.sleep(0.01)  # let the worker record the outcome: idle again
            return start - t0

        for i in range(20):  # warm-up: connections, statement caches
            await sample(i)
        for _run in range(ctx.opts.runs):
            await reset_jobs(ctx.pool)
            meter = CpuMeter(ctx.env.db_name, services)
            await ctx.settle(services)
            meter.start()
            enqueue_ms.clear()
            values = [await sample(i) * 1e3 for i in range(samples)]
            _record_cpu(ctx, f"latency {label}", meter.stop())
            call.values.append(percentile(enqueue_ms, 50))
            in_db = await ctx.pool.fetchval(
                "SELECT percentile_cont(0.5) WITHIN GROUP "
                "(ORDER BY extract(epoch FROM started_at - created_at)) * 1000 FROM jobs"
            )
            claim.values.append(float(in_db))
            p50.values.append(percentile(values, 50))
            p99.values.append(percentile(values, 99))
            res.details.setdefault(f"latency_ms {label}", []).append(
                {
                    "min": min(values),
                    "p50": percentile(values, 50),
                    "p90": percentile(values, 90),
                    "p99": percentile(values, 99),
                    "max": max(values),
                }
            )
    finally:
        for p in await stop_all(services):
            res.error("latency", p)


# --- drain ------------------------------------------------------------------------------


@dataclass(slots=True)
class DrainRun:
    rate: float
    worker_rss_mib: list[float]
    migrator_rss_mib: float
    cpu: dict[str, float]  # share of the machine (all cores) per role, in %
    cpu_seconds: dict[str, float]  # CPU seconds per role over the drain
    profile: dict[str, Any] | None = None


async def prepare_backlog(ctx: Ctx, *, truncate: bool) -> list[uuid.UUID]:
    """N due queued jobs, inserted while nothing runs, then VACUUM ANALYZE."""
    async with ctx.conn() as conn:
        if truncate:
            await reset_jobs(conn)
        ids = await insert_queued(conn, ctx.opts.jobs)
        await conn.execute("VACUUM (ANALYZE) jobs")
        await conn.execute("VACUUM (ANALYZE) job_logs")
    await ctx.env.clear_redis(ctx.redis)
    return ids


async def drain_once(
    ctx: Ctx, ids: list[uuid.UUID], label: str, *, profile: bool, only_these: bool = False
) -> DrainRun:
    """Drain the queued jobs `ids` with the workers and a migrator; done when no job is
    pending (`only_these`: none of `ids`, for a table with a blocked backlog)."""
    n = len(ids)
    stamp_dir = ctx.log_dir / f"stamps-{label}"
    shutil.rmtree(stamp_dir, ignore_errors=True)
    stamp_dir.mkdir(parents=True)
    env = ctx.env.service_env(BENCH_MODE="drain", BENCH_STAMP_DIR=str(stamp_dir))
    workers = [
        start_service(f"{label}-worker{i + 1}", ["-m", "app.worker"], env, ctx.log_dir)
        for i in range(ctx.opts.workers)
    ]
    services = list(workers)
    spies: list[PySpy] = []
    try:
        await _wait_ready(ctx, workers, None)
        await ctx.settle(workers)
        if profile:
            spies = [PySpy.attach(w.pid, ctx.log_dir / f"{w.name}.pyspy.txt") for w in workers]
        migrator = start_service(f"{label}-migrator", ["-m", "app.migrator"], env, ctx.log_dir)
        services.append(migrator)
        if profile:
            spies.append(PySpy.attach(migrator.pid, ctx.log_dir / f"{label}-migrator.pyspy.txt"))
        meter = CpuMeter(ctx.env.db_name, services)
        meter.start()

        async def drained() -> bool:
            for s in services:
                s.check_alive()
            if only_these:
                pending: int = await ctx.pool.fetchval(PENDING_OF, ids)
            else:
                pending = await ctx.pool.fetchval(PENDING)
            return pending == 0

        await wait_until(
            drained, timeout=ctx.opts.timeout, what=f"{n} jobs to finish", interval=0.2
        )
        cpu_pct = meter.stop()
        cpu_seconds = meter.seconds
        worker_rss = [w.peak_rss_mib() or 0.0 for w in workers]
        migrator_rss = migrator.peak_rss_mib() or 0.0
    except BaseException:
        for s in services:
            s.kill()
        for spy in spies:
            spy.stop()
        raise
    problems = await stop_all(services)
    if problems:
        raise ScenarioError("; ".join(problems))
    profiles = [spy.finish() for spy in spies]

    stamps: list[float] = []
    for f in sorted(stamp_dir.glob("*.stamps")):
        a = array.array("d")
        a.frombytes(f.read_bytes())
        stamps.extend(a)
    if len(stamps) != 2 * n:
        raise ScenarioError(f"handlers stamped {len(stamps) // 2} job runs, expected {n}")
    first_start = min(stamps[0::2])
    last_end = max(stamps[1::2])
    completed, logs, logs_completed = await job_outcome(ctx.pool, ids)
    if (completed, logs, logs_completed) != (n, n, n):
        raise ScenarioError(
            f"after the drain: {completed} completed jobs, {logs} job_logs rows "
            f"({logs_completed} completed); expected {n} of each"
        )
    profile_summary = None
    if profiles:
        profile_summary = {w.name: summarize(p) for w, p in zip(services, profiles, strict=True)}
    return DrainRun(
        rate=n / (last_end - first_start),
        worker_rss_mib=worker_rss,
        migrator_rss_mib=migrator_rss,
        cpu=cpu_pct,
        cpu_seconds=cpu_seconds,
        profile=profile_summary,
    )


def _record_drain(ctx: Ctx, scenario: str, run: DrainRun) -> None:
    res = ctx.results
    if scenario == "drain":
        res.metric("drain", "jobs/s", "jobs/s", DRAIN_TARGET, ">=").values.append(run.rate)
        res.metric(
            "rss", "worker peak RSS (max of workers)", "MiB", RSS_TARGET, "<="
        ).values.append(max(run.worker_rss_mib))
        res.metric("rss", "migrator peak RSS", "MiB").values.append(run.migrator_rss_mib)
    else:
        res.metric(scenario, "drain jobs/s", "jobs/s").values.append(run.rate)
    _record_cpu(ctx, scenario, run.cpu)


async def drain(ctx: Ctx) -> None:
    ctx.results.note(
        "drain",
        f"{ctx.opts.jobs} queued jobs inserted while nothing runs; {ctx.opts.workers} "
        "`python -m app.worker` started and ready first, then `python -m app.migrator`; "
        "jobs/s = N / (last handler end - first handler start); every run checked: N "
        "completed jobs, N job_logs rows",
    )
    for run in range(ctx.opts.runs):
        ids = await prepare_backlog(ctx, truncate=True)
        _record_drain(ctx, "drain", await drain_once(ctx, ids, f"drain{run + 1}", profile=False))
    if ctx.opts.py_spy:
        ids = await prepare_backlog(ctx, truncate=True)
        result = await drain_once(ctx, ids, "drain-pyspy", profile=True)
        ctx.results.details["drain_profile"] = result.profile
        ctx.results.details["drain_profile_rate"] = result.rate
        ctx.results.note(
            "drain",
            f"py-spy run (not counted): {result.rate:,.0f} jobs/s while sampled",
        )


async def empty_table_drain(ctx: Ctx, scenario: str) -> Metric:
    """The `drain` figure on an empty table, measured now unless `drain` ran already
    (the scenarios that compare a loaded table with it need one)."""
    res = ctx.results
    empty_drain = res.find("drain", "jobs/s")
    if empty_drain is None or not empty_drain.values:
        res.note(scenario, "drain scenario not run: measuring the empty-table drain here")
        for run in range(ctx.opts.runs):
            ids = await prepare_backlog(ctx, truncate=True)
            _record_drain(
                ctx, "drain", await drain_once(ctx, ids, f"drain{run + 1}", profile=False)
            )
        empty_drain = res.find("drain", "jobs/s")
    assert empty_drain is not None
    return empty_drain


# The move's idle timeout and the claim's lock timeout (ms) in the statements run here.
IDLE_MS = "10000"


# --- big table -----------------------------------------------------------------------------

FILL_CHUNK = 500_000


async def fill_finished(conn: asyncpg.Connection, rows: int) -> None:
    """`rows` finished jobs (97% completed, 2% failed, 1% cancelled) over the past days."""
    await conn.execute("SET session_replication_role = replica")  # no triggers, no FK checks
    try:
        for lo in range(1, rows + 1, FILL_CHUNK):
            hi = min(rows, lo + FILL_CHUNK - 1)
            await conn.execute(
                f"""
                INSERT INTO jobs (queue_name, status, priority, payload, attempt_count,
                                  max_attempts, run_at, started_at, completed_at, failed_at,
                                  last_error_message, worker_id, created_at, updated_at)
                SELECT $1, st, 100, {sql_payload()}, 1, 3, ts, ts + interval '2 ms',
                       CASE WHEN st = 'completed' THEN ts + interval '3 ms' END,
                       CASE WHEN st = 'failed' THEN ts + interval '3 ms' END,
                       CASE WHEN st = 'failed' THEN 'Error: bench filler' END,
                       'bench-filler', ts, ts + interval '3 ms'
                FROM (
                    SELECT g,
                           CASE WHEN g % 100 < 97 THEN 'completed'
                                WHEN g % 100 < 99 THEN 'failed' ELSE 'cancelled' END AS st,
                           now() - make_interval(secs => ($3 - g) * 0.1) AS ts
                    FROM generate_series($2::int, $4::int) g
                ) s
                """,
                QUEUE,
                lo,
                rows,
                hi,
                timeout=3600,
            )
    finally:
        await conn.execute("RESET session_replication_role")


def _subplan_ms(node: dict[str, Any], name: str) -> float | None:
    """Actual total time of the sub-plan called `name` (e.g. "CTE due"), if any."""
    if node.get("Subplan Name") == name:
        return float(node["Actual Total Time"])
    for child in node.get("Plans", []):
        found = _subplan_ms(child, name)
        if found is not None:
            return found
    return None


async def _explain_ms(
    conn: asyncpg.Connection,
    statement: str,
    args: list[Any],
    reps: int,
    subplan: str | None = None,
) -> tuple[float, str, float]:
    """Median execution time of EXPLAIN ANALYZE over `reps`, each rolled back, the text
    plan of one more, and the median time of the sub-plan named `subplan` (NaN if none).
    Planning time is left out: asyncpg prepares statements, so the service plans them
    once per connection, not per call."""
    times: list[float] = []
    sub_times: list[float] = []
    for _ in range(reps):
        tr = conn.transaction()
        await tr.start()
        try:
            raw = await conn.fetchval("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, *args)
        finally:
            await tr.rollback()
        plan = orjson.loads(raw)[0]
        times.append(plan["Execution Time"])
        sub = _subplan_ms(plan["Plan"], subplan) if subplan is not None else None
        if sub is not None:
            sub_times.append(sub)
    tr = conn.transaction()
    await tr.start()
    try:
        rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + statement, *args)
    finally:
        await tr.rollback()
    sub_ms = statistics.median(sub_times) if sub_times else math.nan
    return statistics.median(times), "\n".join(r[0] for r in rows), sub_ms


async def _explain_worker_statements(
    conn: asyncpg.Connection, batch: int, queues: list[str]
) -> dict[str, str]:
    """EXPLAIN ANALYZE of a claim and a completion of 10 jobs, in the state a drain
    meets: the whole backlog moved to migrated_to_redis. All rolled back."""
    plans: dict[str, str] = {}
    tr = conn.transaction()
    await tr.start()
    try:
        moved: list[uuid.UUID] = []
        while True:
            rows = await conn.fetch(sql.MOVE_DUE_JOBS, [QUEUE], batch, IDLE_MS)
            moved += [r["id"] for r in rows]
            if len(rows) < batch:
                break
        ids = moved[:10]
        worker = "bench-explain"
        claim = await conn.fetch(
            "EXPLAIN (ANALYZE, BUFFERS) " + sql.CLAIM_JOBS, ids, worker, 30.0, IDLE_MS
        )
        plans[f"CLAIM_JOBS (10 ids, {len(moved)} jobs migrated_to_redis)"] = "\n".join(
            r[0] for r in claim
        )
        now = [datetime.now(UTC)] * len(ids)
        # EXPLAIN ANALYZE ran the claim: these are attempt 1, running, with a new token.
        rows = await conn.fetch("SELECT id, lease_token FROM jobs WHERE id = ANY($1)", ids)
        tokens = {r["id"]: r["lease_token"] for r in rows}
        done = await conn.fetch(
            "EXPLAIN (ANALYZE, BUFFERS) " + sql.COMPLETE_JOBS,
            ids,
            [1] * len(ids),
            now,
            now,
            worker,
            [tokens[i] for i in ids],
        )
        plans["COMPLETE_JOBS (10 jobs)"] = "\n".join(r[0] for r in done)
    finally:
        await tr.rollback()
    return plans


async def measure_hot_queries(ctx: Ctx, label: str) -> dict[str, float]:
    """EXPLAIN ANALYZE (rolled back) of the hot queries; the plans go in the details."""
    async with ctx.conn() as conn:
        # The bench queue is the one active queue with jobs.
        queues = [QUEUE]
        batch = int(ctx.env.overrides.get("MIGRATOR_BATCH_SIZE", "500"))
        reps = ctx.opts.query_reps
        move_ms, move_plan, due_ms = await _explain_ms(
            conn, sql.MOVE_DUE_JOBS, [queues, batch, IDLE_MS], reps, subplan="CTE due"
        )
        # ~20 µs: at that scale one EXPLAIN's timing wobbles by a quarter from run to run
        # (same plan, same 5 buffers); many more samples for a stable median.
        next_ms, next_plan, _ = await _explain_ms(
            conn, sql.SECONDS_UNTIL_NEXT_DUE, [], max(reps, NEXT_DUE_REPS)
        )
        plans = {"MOVE_DUE_JOBS": move_plan, "SECONDS_UNTIL_NEXT_DUE": next_plan}
        plans.update(await _explain_worker_statements(conn, batch, queues))
        stats = await conn.fetchrow(
            "SELECT count(*) AS rows, pg_total_relation_size('jobs') AS bytes FROM jobs"
        )
        assert stats is not None
        # The rolled-back updates left dead rows: clear them before anything else runs.
        await conn.execute("VACUUM (ANALYZE) jobs")
    ctx.results.details.setdefault("explain", {})[label] = {
        "jobs_rows": stats["rows"],
        "jobs_total_bytes": stats["bytes"],
        "plans": plans,
        "move_due_jobs_ms": move_ms,
        "move_due_selection_ms": due_ms,
        "seconds_until_next_due_ms": next_ms,
    }
    return {"move": move_ms, "due": due_ms, "next": next_ms}


async def _measure_runs(ctx: Ctx, label: str) -> dict[str, float]:
    """The hot queries measured once per run; their medians over the runs."""
    res = ctx.results
    move = res.metric("big-table", f"MOVE_DUE_JOBS {label}", "ms")
    due = res.metric("big-table", f"of which the due selection (CTE due) {label}", "ms")
    nxt = res.metric("big-table", f"SECONDS_UNTIL_NEXT_DUE {label}", "ms")
    for _run in range(ctx.opts.runs):
        await ctx.settle()
        times = await measure_hot_queries(ctx, label)
        move.values.append(times["move"])
        due.values.append(times["due"])
        nxt.values.append(times["next"])
    return {"move": move.median, "due": due.median, "next": nxt.median}


async def big_table(ctx: Ctx) -> None:
    res = ctx.results
    m = ctx.opts.big_table_rows
    n = ctx.opts.jobs
    res.note(
        "big-table",
        f"jobs filled with {m:,} finished rows (INSERT ... SELECT generate_series in chunks "
        f"of {FILL_CHUNK:,}, then VACUUM ANALYZE); job_logs not filled. Queries: EXPLAIN "
        f"ANALYZE in a rolled-back transaction with {n} due jobs queued, median of "
        f"{ctx.opts.query_reps} execution times per run ({NEXT_DUE_REPS} for "
        "SECONDS_UNTIL_NEXT_DUE; asyncpg prepares statements: "
        "planning is not paid per call); ratios of the medians over the runs",
    )
    # The empty-table baseline.
    await prepare_backlog(ctx, truncate=True)
    empty = await _measure_runs(ctx, "empty")
    empty_drain = await empty_table_drain(ctx, "big-table")

    async with ctx.conn() as conn:
        await reset_jobs(conn)
        t0 = time.perf_counter()
        await fill_finished(conn, m)
        fill_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        await conn.execute("VACUUM (ANALYZE) jobs", timeout=3600)
        vacuum_s = time.perf_counter() - t0
    res.note("big-table", f"fill: {fill_s:.0f} s, VACUUM ANALYZE: {vacuum_s:.0f} s")

    await prepare_backlog(ctx, truncate=False)
    big = await _measure_runs(ctx, "big")
    move = res.metric(
        "big-table", "due query (MOVE_DUE_JOBS) big/empty", "x", BIG_TABLE_SLOWDOWN, "<="
    )
    move.values.append(big["move"] / empty["move"])
    # For reading the above: finding and locking the batch, apart from writing it.
    selection = res.metric("big-table", "due selection (CTE due) big/empty", "x")
    selection.values.append(big["due"] / empty["due"])
    nxt = res.metric("big-table", "SECONDS_UNTIL_NEXT_DUE big/empty", "x", BIG_TABLE_SLOWDOWN, "<=")
    nxt.values.append(big["next"] / empty["next"])

    # The drain on the big table (its backlog is the one just measured, then fresh ones;
    # finished bench jobs stay, as they would in production).
    for run in range(ctx.opts.runs):
        ids = (
            [r["id"] for r in await ctx.pool.fetch("SELECT id FROM jobs WHERE status = 'queued'")]
            if run == 0
            else await prepare_backlog(ctx, truncate=False)
        )
        result = await drain_once(ctx, ids, f"big{run + 1}", profile=False)
        _record_drain(ctx, "big-table", result)
    big_drain = res.find("big-table", "drain jobs/s")
    assert big_drain is not None
    ratio = res.metric("big-table", "drain big/empty", "x", BIG_TABLE_DRAIN_RATIO, ">=")
    ratio.values.append(big_drain.median / empty_drain.median)


async def backlog(ctx: Ctx) -> None:
    """A blocked backlog beside a served queue: bench/backlog.py (it imports this module)."""
    from bench.backlog import run_backlog

    await run_backlog(ctx)


SCENARIOS = {
    "enqueue-one": enqueue_one,
    "enqueue-bulk": enqueue_bulk,
    "http": http,
    "latency": latency,
    "drain": drain,  # also measures rss
    "big-table": big_table,
    "backlog": backlog,
}
ALIASES = {"rss": "drain"}
