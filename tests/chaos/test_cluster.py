"""Redis Cluster (REDIS_CLUSTER): three primaries started by the test, queues whose keys
live on different shards. Jobs flow on all of them, priorities stay strict within each
queue, a shard that loses its data has only its own jobs queued again, and a shard that
is down holds back only its own queues."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from app.cluster import is_cluster
from app.db.inserts import InsertStore
from app.direct import DirectPush
from app.jobs.model import JobToInsert
from app.keys import Keys
from app.main import create_app, serving
from app.maintenance.reconcile import RedisReconciler
from app.registry import HandlerRegistry, Job
from app.runtime import Runtime, open_runtime
from app.settings import Settings
from app.worker.cluster_fetch import make_fetcher
from app.worker.runner import Worker
from tests.support.factories import add_queue, wait_for
from tests.support.redis_cluster import RedisClusterGroup

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def group() -> Iterator[RedisClusterGroup]:
    with RedisClusterGroup() as g:
        yield g


@pytest.fixture
def csettings(settings: Settings, group: RedisClusterGroup) -> Settings:
    return settings.replace(redis_url=group.url, redis_cluster=True, maintenance_interval=0.1)


def queues_on_shards(group: RedisClusterGroup, prefix: str, n: int = 3) -> list[str]:
    """`n` queue names whose keys are on `n` different primaries."""
    keys = Keys(prefix, cluster=True)
    found: dict[int, str] = {}
    i = 0
    while len(found) < n:
        name = f"t-c{i}"
        found.setdefault(group.port_of(keys.wake_marker(name)), name)
        i += 1
    return list(found.values())


@pytest.fixture
async def crt(
    csettings: Settings, registry: HandlerRegistry, clean_db: None, group: RedisClusterGroup
) -> AsyncIterator[Runtime]:
    async with open_runtime(csettings, registry) as rt:
        assert is_cluster(rt.redis)
        try:
            yield rt
        finally:
            for port in group.ports:
                with contextlib.suppress(Exception):
                    group.client(port).flushall()


async def fill(rt: Runtime, queue: str, n: int, priority: int = 100) -> None:
    await rt.pool.execute(
        "INSERT INTO jobs (queue_name, payload, priority) "
        "SELECT $1, jsonb_build_object('n', g), $3 FROM generate_series(1, $2) g",
        queue,
        n,
        priority,
    )


async def count(rt: Runtime, status: str, queue: str | None = None) -> int:
    n: int = await rt.pool.fetchval(
        "SELECT count(*) FROM jobs WHERE status = $1 AND ($2::text IS NULL OR queue_name = $2)",
        status,
        queue,
    )
    return n


@contextlib.asynccontextmanager
async def running(rt: Runtime, *workers: Worker, maintenance: bool = False) -> AsyncIterator[None]:
    """A migrator (and maintenance) and these workers, stopped by event on exit."""
    migrator = rt.migrator()
    tasks = [asyncio.create_task(migrator.run()), *(asyncio.create_task(w.run()) for w in workers)]
    m = rt.maintenance() if maintenance else None
    if m is not None:
        tasks.append(asyncio.create_task(m.run()))
    try:
        yield
    finally:
        migrator.stop()
        for w in workers:
            w.stop()
        if m is not None:
            m.stop()
        await asyncio.gather(*tasks)


async def test_ten_thousand_jobs_on_three_shards_complete(
    crt: Runtime, registry: HandlerRegistry, group: RedisClusterGroup
) -> None:
    rt = crt
    queues = queues_on_shards(group, rt.keys.prefix)
    ran: dict[str, int] = dict.fromkeys(queues, 0)
    for q in queues:
        await add_queue(rt, q)

        @registry.handler(q)
        async def handle(job: Job) -> None:
            ran[job.queue_name] += 1

    per_queue = [3334, 3333, 3333]
    for q, n in zip(queues, per_queue, strict=True):
        await fill(rt, q, n)
    workers = [rt.worker(concurrency=50), rt.worker(concurrency=50)]
    async with running(rt, *workers):
        await wait_for(
            lambda: _all(rt, "completed", 10_000), timeout=60, what="10,000 jobs completed"
        )
    assert ran == dict(zip(queues, per_queue, strict=True))
    assert await count(rt, "completed") == 10_000


async def _all(rt: Runtime, status: str, n: int) -> bool:
    return await count(rt, status) >= n


async def test_priorities_stay_strict_within_each_queue(
    crt: Runtime, registry: HandlerRegistry, group: RedisClusterGroup
) -> None:
    rt = crt
    queues = queues_on_shards(group, rt.keys.prefix, 2)
    order: dict[str, list[int]] = {q: [] for q in queues}
    for q in queues:
        await add_queue(rt, q)

        @registry.handler(q)
        async def handle(job: Job) -> None:
            order[job.queue_name].append(job.priority)

        # Low first, then normal, then high: the pop takes them the other way round.
        for priority in (200, 100, 10):
            await fill(rt, q, 30, priority)
    await rt.migrator().move_due_jobs()
    await rt.worker(burst=True, concurrency=1).run()
    for q in queues:
        assert order[q] == [10] * 30 + [100] * 30 + [200] * 30, q


async def test_a_backlog_on_one_shard_starves_no_queue_on_another(
    crt: Runtime, registry: HandlerRegistry, group: RedisClusterGroup
) -> None:
    rt = crt
    busy, *others = queues_on_shards(group, rt.keys.prefix)
    order: list[str] = []
    for q in (busy, *others):
        await add_queue(rt, q)

        @registry.handler(q)
        async def handle(job: Job) -> None:
            order.append(job.queue_name)

    await fill(rt, busy, 400)
    for q in others:
        await fill(rt, q, 20)
    await rt.migrator().move_due_jobs()
    await rt.worker(burst=True, concurrency=4).run()
    assert len(order) == 440
    # Equal shares per pop: the two small queues are served as fast as the busy one.
    last_small = max(i for i, q in enumerate(order) if q != busy)
    assert last_small < 100, order[:100]


async def test_a_cancel_reaches_the_worker_over_cluster_pub_sub(
    crt: Runtime, registry: HandlerRegistry
) -> None:
    rt = crt
    started = asyncio.Event()

    @registry.handler("t-c-cancel")
    async def long_running(job: Job) -> None:
        started.set()
        await asyncio.sleep(60)

    await add_queue(rt, "t-c-cancel")
    await fill(rt, "t-c-cancel", 1)
    await rt.migrator().move_due_jobs()
    worker = rt.worker(burst=True)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.wait_for(worker.cancels.subscribed.wait(), 10)
    job_id = await rt.pool.fetchval("SELECT id FROM jobs WHERE queue_name = 't-c-cancel'")
    async with _api(rt) as c:
        response = await c.post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.text
    # Stopped over pub/sub (published and answered through the cluster), not at a heartbeat.
    assert (response.json()["status"], response.json()["outcome"]) == ("cancelled", "stopped")
    await asyncio.wait_for(task, 10)
    assert await rt.redis.hget(rt.keys.job(str(job_id)), "status") == b"cancelled"


async def test_a_shard_that_lost_its_data_has_only_its_jobs_queued_again(
    crt: Runtime, registry: HandlerRegistry, group: RedisClusterGroup
) -> None:
    rt = crt
    queues = queues_on_shards(group, rt.keys.prefix)
    for q in queues:
        await add_queue(rt, q)

        @registry.handler(q)
        async def handle(job: Job) -> None:
            pass

    reconciler = RedisReconciler(rt.recovery, rt.redis, rt.keys, rt.settings)
    assert await reconciler.run_once() == 0  # sets every queue's marker
    for q in queues:
        await fill(rt, q, 200)
    await rt.migrator().move_due_jobs()
    assert await count(rt, "migrated_to_redis") == 600
    lost = queues[0]
    group.client(group.port_of(rt.keys.wake_marker(lost))).flushall()

    assert await reconciler.run_once() == 200
    assert await count(rt, "queued", lost) == 200
    for q in queues[1:]:
        assert await count(rt, "migrated_to_redis", q) == 200
    assert await reconciler.run_once() == 0  # its marker is back

    await rt.migrator().move_due_jobs()
    await rt.worker(burst=True, concurrency=20).run()
    assert await count(rt, "completed") == 600
    twice = await rt.pool.fetchval("SELECT count(*) FROM jobs WHERE attempt_count > 1")
    assert twice == 0


async def test_the_direct_path_pushes_to_each_queues_shard_while_its_marker_holds(
    crt: Runtime, registry: HandlerRegistry, group: RedisClusterGroup
) -> None:
    rt = crt
    assert rt.inserts.direct is None  # the suite's settings turn it off
    direct = DirectPush.of(rt.pool, rt.redis, rt.keys, rt.settings)
    inserts = InsertStore(rt.pool, direct)
    queues = queues_on_shards(group, rt.keys.prefix)
    ran: list[str] = []
    for q in queues:
        await add_queue(rt, q)

        @registry.handler(q)
        async def handle(job: Job) -> None:
            ran.append(job.queue_name)

    reconciler = RedisReconciler(rt.recovery, rt.redis, rt.keys, rt.settings)
    assert await reconciler.run_once() == 0  # sets every queue's marker
    # One shard lost its data (its queue's marker with it): that queue's jobs take the
    # migrator's path until the reconciler has run; the others go straight to Redis.
    lost = queues[0]
    group.client(group.port_of(rt.keys.wake_marker(lost))).flushall()
    rows = [JobToInsert(queue_name=q, payload_json="{}") for q in queues for _ in range(10)]
    results = await inserts.insert_each(rows, key_ttl=0)
    statuses = {(r.job.queue_name, r.job.status) for r in results if r.job is not None}
    assert statuses == {
        (lost, "queued"),
        *((q, "migrated_to_redis") for q in queues[1:]),
    }
    await direct.flushed()
    assert await rt.redis.llen(rt.keys.queue_list(queues[1], "normal")) == 10
    await reconciler.run_once()
    await rt.migrator().move_due_jobs()
    await rt.worker(burst=True, concurrency=20).run()
    assert sorted(ran) == sorted(q for q in queues for _ in range(10))
    assert await count(rt, "completed") == 30


@pytest.mark.parametrize("how", ["killed", "hung"])
async def test_a_shard_down_holds_back_only_its_queues_until_it_returns(
    crt: Runtime, registry: HandlerRegistry, group: RedisClusterGroup, how: str
) -> None:
    """Killed (-9, then started again empty: its jobs are queued again) or hung
    (SIGSTOP, then SIGCONT: it answers again with its data)."""
    rt = crt
    queues = queues_on_shards(group, rt.keys.prefix)
    down, up = queues[0], queues[1:]
    for q in queues:
        await add_queue(rt, q)

        @registry.handler(q)
        async def handle(job: Job) -> None:
            pass

    port = group.port_of(rt.keys.wake_marker(down))
    worker = rt.worker(concurrency=20)
    async with running(rt, worker, maintenance=True):
        for q in queues:
            await fill(rt, q, 100)
        await wait_for(lambda: _all(rt, "completed", 300), timeout=20, what="first jobs")
        if how == "killed":
            group.kill(port)
        else:
            group.procs[port].send_signal(signal.SIGSTOP)
        for q in queues:
            await fill(rt, q, 300)
        for q in up:
            await wait_for(
                functools.partial(_queue_has, rt, q, "completed", 400),
                timeout=20,
                what=f"queue {q} to flow with a shard down",
            )
        assert await count(rt, "completed", down) == 100
        health, metrics = await _observed(rt)
        assert health["redis"]["status"] == "degraded"
        by_shard = {s["shard"]: s for s in health["redis"]["shards"]}
        assert by_shard[f"127.0.0.1:{port}"]["status"] == "unhealthy"
        assert down in by_shard[f"127.0.0.1:{port}"]["queues"]
        assert all(
            by_shard[f"127.0.0.1:{group.port_of(rt.keys.wake_marker(q))}"]["status"] == "healthy"
            for q in up
        )
        assert f'hybridq_redis_shard_up{{shard="127.0.0.1:{port}"}} 0.0' in metrics
        assert (
            f'hybridq_redis_queue_shard{{queue="{down}",shard="127.0.0.1:{port}"}} 1.0' in metrics
        )
        for q in up:
            assert f'hybridq_redis_queue_depth{{level="normal",queue="{q}"}}' in metrics
        assert f'hybridq_redis_queue_depth{{level="normal",queue="{down}"}}' not in metrics

        if how == "killed":
            group.restart(port)  # back, empty
        else:
            group.procs[port].send_signal(signal.SIGCONT)
        await wait_for(
            lambda: _all(rt, "completed", 1200), timeout=30, what="every job after the return"
        )
    twice = await rt.pool.fetchval("SELECT count(*) FROM jobs WHERE attempt_count > 1")
    assert twice == 0


async def _queue_has(rt: Runtime, queue: str, status: str, n: int) -> bool:
    return await count(rt, status, queue) >= n


@contextlib.asynccontextmanager
async def _api(rt: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(rt.settings, rt.registry)
    transport = httpx.ASGITransport(app=app)
    async with (
        serving(app, rt),
        httpx.AsyncClient(transport=transport, base_url="http://hybridq.test") as c,
    ):
        yield c


async def _observed(rt: Runtime) -> tuple[Any, str]:
    """GET /health/queues and /metrics."""
    async with _api(rt) as c:
        health = await c.get("/health/queues")
        assert health.status_code == 200, health.text
        metrics = await c.get("/metrics")
        assert metrics.status_code == 200, metrics.text
        # Ready: the other shards answer (and their queues flow).
        ready = await c.get("/health/ready")
        assert ready.status_code == 200, ready.text
        return health.json(), metrics.text


async def test_a_fetcher_of_one_queue_blocks_on_its_shard_and_pops(
    crt: Runtime, group: RedisClusterGroup
) -> None:
    # One served queue: the wait and the pop go in one pipeline to the queue's shard.
    rt = crt
    (queue,) = queues_on_shards(group, rt.keys.prefix, n=1)
    await add_queue(rt, queue)
    fetcher = make_fetcher(rt.redis, rt.keys, [queue])
    assert await fetcher.wait_and_pop(10, timeout=0.1) == []  # nothing there: it timed out
    await fill(rt, queue, 3)
    assert (await rt.migrator().move_due_jobs()).moved == 3
    assert len(await fetcher.wait_and_pop(10, timeout=5)) == 3
