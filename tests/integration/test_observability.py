"""Health, metrics and logs on real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import io
import logging
import uuid

import asyncpg
import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from app.logs import make_handler
from app.registry import HandlerRegistry, Job
from app.runtime import Runtime
from tests.support.factories import add_queue, create_job


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_health_queues_reports_redis_depths_workers_and_job_counts(
    runtime: Runtime, registry: HandlerRegistry, client: httpx.AsyncClient
) -> None:
    rt = runtime
    started = asyncio.Event()
    release = asyncio.Event()

    @registry.handler("t-health")
    async def hold(job: Job) -> None:
        started.set()
        await release.wait()

    await add_queue(rt, "t-health")
    await create_job(rt, "t-health", priority=10)
    await create_job(rt, "t-health")
    await create_job(rt, "t-health", priority=900)
    await rt.migrator().move_due_jobs()
    worker = rt.worker(concurrency=1)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(started.wait(), 10)
        # The heartbeat ran before the first fetch; it indexed the worker.
        body = (await client.get("/health/queues")).json()
    finally:
        release.set()
        worker.stop()
        await task

    assert body["redis"]["status"] == "healthy"
    assert body["redis"]["ping"] == "PONG"
    assert body["redis"]["memory_used"] and body["redis"]["connected_clients"] >= 1
    assert body["queues"]["queue:{t-health}:high"] == 0  # popped, running
    assert body["queues"]["queue:{t-health}:normal"] == 1
    assert body["queues"]["queue:{t-health}:low"] == 1
    assert body["workers"] == {"active_workers": 1, "worker_ids": [worker.worker_id]}
    assert body["jobs"] == {"running": 1, "migrated_to_redis": 2}
    assert body["jobs_exact"] is True


async def test_counts_fall_back_to_estimates_when_counting_is_too_slow(
    runtime: Runtime, database_url: str
) -> None:
    rt = runtime
    await add_queue(rt, "t-estimate")
    for _ in range(20):
        await create_job(rt, "t-estimate")
    await rt.pool.execute("ANALYZE jobs")
    admin = rt.listings
    exact = await admin.count_jobs(timeout=2.0)
    assert exact.exact and exact.by_status == {"queued": 20}

    # An exclusive lock makes the count wait past its timeout, as a huge table would.
    blocker = await asyncpg.connect(database_url)
    try:
        async with blocker.transaction():
            await blocker.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
            estimated = await asyncio.wait_for(admin.count_jobs(timeout=0.05), 5)
    finally:
        await blocker.close()
    assert not estimated.exact
    assert estimated.by_queue == {}
    assert estimated.by_status == {"queued": 20}


async def test_metrics_total_the_work_of_several_workers(
    runtime: Runtime, registry: HandlerRegistry, client: httpx.AsyncClient
) -> None:
    rt = runtime

    @registry.handler("t-metrics")
    async def work(job: Job) -> None:
        if job.payload.get("fail"):
            raise RuntimeError("no")

    await add_queue(rt, "t-metrics")
    await add_queue(rt, "t-metrics-idle")
    created = await client.post(
        "/jobs/batch",
        json={
            "jobs": [{"queue_name": "t-metrics", "payload": {"n": n}} for n in range(10)]
            + [{"queue_name": "t-metrics", "payload": {"fail": True}, "max_attempts": 2}]
        },
    )
    assert created.status_code == 201
    await create_job(rt, "t-metrics-idle", priority=500)

    # Two workers (two ids, as two processes would be) share the jobs.
    await rt.migrator().move_due_jobs()
    one = rt.worker(burst=True, concurrency=3, worker_id="metrics-worker-1")
    two = rt.worker(burst=True, concurrency=3, worker_id="metrics-worker-2")
    await asyncio.gather(one.run(), two.run())
    assert one.jobs_started and two.jobs_started
    # The failed job's retry, then its dead letter.
    for _ in range(100):
        await rt.migrator().move_due_jobs()
        await rt.worker(burst=True, worker_id="metrics-worker-3").run()
        if await rt.pool.fetchval("SELECT count(*) FROM jobs WHERE status = 'failed'"):
            break
        await asyncio.sleep(0.02)

    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    m = samples(response.text)
    q = (("queue", "t-metrics"),)
    assert m[("hybridq_jobs_created_total", q)] == 11
    assert m[("hybridq_jobs_migrated_total", q)] == 12  # 11, and the retry
    assert m[("hybridq_jobs_started_total", q)] == 12
    assert m[("hybridq_jobs_completed_total", q)] == 10
    assert m[("hybridq_jobs_failed_total", q)] == 2
    assert m[("hybridq_jobs_retried_total", q)] == 1
    assert m[("hybridq_jobs_dead_lettered_total", q)] == 1
    assert m[("hybridq_job_run_seconds_count", q)] == 12
    assert m[("hybridq_job_wait_seconds_count", q)] == 12
    assert m[("hybridq_job_run_seconds_bucket", (("le", "+Inf"), *q))] == 12
    assert m[("hybridq_job_wait_seconds_sum", q)] >= 0
    assert m[("hybridq_jobs", (("queue", "t-metrics"), ("status", "completed")))] == 10
    assert m[("hybridq_jobs", (("queue", "t-metrics"), ("status", "failed")))] == 1
    idle = (("queue", "t-metrics-idle"), ("status", "migrated_to_redis"))
    assert m[("hybridq_jobs", idle)] == 1  # no worker serves it: it waits in Redis
    assert m[("hybridq_job_counts_exact", ())] == 1
    assert m[("hybridq_redis_queue_depth", (("level", "low"), ("queue", "t-metrics-idle")))] == 1
    assert m[("hybridq_workers_live", ())] == 0  # burst workers leave the index on exit

    # An operator's replay is counted too.
    dead = await rt.pool.fetchval("SELECT id FROM jobs WHERE status = 'failed'")
    assert (await client.post(f"/dead-letter/{dead}/replay")).status_code == 200
    m = samples((await client.get("/metrics")).text)
    assert m[("hybridq_jobs_replayed_total", q)] == 1


async def test_json_log_lines_about_a_job_carry_its_context(
    runtime: Runtime, registry: HandlerRegistry
) -> None:
    rt = runtime
    stream = io.StringIO()
    handler = make_handler("json", stream)
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)

    @registry.handler("t-logs")
    async def noisy(job: Job) -> None:
        logging.getLogger("user.handler").info("sending %s", job.payload["to"])
        raise ValueError("bounced")

    await add_queue(rt, "t-logs")
    job_id = await create_job(rt, "t-logs", {"to": "a@example.com"}, max_attempts=3)
    await rt.migrator().move_due_jobs()
    worker = rt.worker(burst=True)
    try:
        await worker.run()
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)

    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    about_job = [line for line in lines if str(job_id) in line["message"] or line.get("job_id")]
    context = {
        "job_id": str(job_id),
        "queue": "t-logs",
        "attempt": 1,
        "worker_id": worker.worker_id,
    }
    user_line = next(line for line in about_job if line["logger"] == "user.handler")
    assert user_line["message"] == "sending a@example.com"
    assert {k: user_line[k] for k in context} == context
    failed_line = next(line for line in about_job if "failed" in line["message"])
    assert {k: failed_line[k] for k in context} == context
    # Lines not about a job carry no job fields.
    other = next(line for line in lines if "serving" in line["message"])
    assert "job_id" not in other
    assert uuid.UUID(user_line["job_id"]) == job_id
