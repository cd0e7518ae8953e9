"""Recovery in-process: stalls and poison pills, Redis data loss, Redis outages at the
API, and the eviction-policy warning. (Popped-but-unclaimed jobs: test_inflight.py.)"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest

from app.db.rows import Success
from app.main import create_app
from app.maintenance.reconcile import RedisReconciler
from app.maintenance.rescue import LeaseRescue
from app.registry import HandlerRegistry, Job
from app.runtime import Runtime, warn_if_redis_can_evict
from app.settings import Settings
from tests.conftest import delete_prefix
from tests.support.factories import (
    add_queue,
    create_job,
    job_row,
    job_status,
    run_until_settled,
    wait_for,
)
from tests.support.servers import PrivateRedis, free_port


async def lease_expired(rt: Runtime, job_id: uuid.UUID) -> bool:
    return bool(
        await rt.pool.fetchval(
            "SELECT lease_expires_at < now() FROM jobs WHERE id = $1 AND status = 'running'",
            job_id,
        )
    )


async def test_an_expired_lease_is_a_stall_and_the_job_runs_again_with_its_attempt(
    runtime: Runtime, registry: HandlerRegistry
) -> None:
    rt = runtime
    ran: list[int] = []

    @registry.handler("t-lease")
    async def record(job: Job) -> None:
        ran.append(job.attempt)

    rt.settings.stall_requeue_spread = 0.0
    await add_queue(rt, "t-lease")
    job_id = await create_job(rt, "t-lease", max_attempts=3)
    await rt.migrator().move_due_jobs()
    # A worker pops and claims, then dies: nobody renews the lease.
    await rt.redis.delete(rt.keys.route("t-lease", 100))
    (claim,) = await rt.store.claim([job_id], "dead-worker", 0.2)
    await wait_for(lambda: lease_expired(rt, job_id), what="lease to expire")

    rescued = await LeaseRescue(rt.recovery, rt.settings, rt.redis, rt.keys).run_once()

    assert rescued == 1
    row = await job_row(rt, job_id)
    assert row["status"] == "queued"
    assert row["attempt_count"] == 0  # the attempt was not spent
    assert row["stall_count"] == 1
    assert row["last_error_message"] == "lease expired: worker dead-worker stopped responding"
    log = await rt.pool.fetchrow("SELECT * FROM job_logs WHERE job_id = $1", job_id)
    assert log is not None
    assert log["attempt_number"] == claim.attempt == 1
    assert log["status"] == "stalled"
    assert log["worker_id"] == "dead-worker"
    assert "attempt not spent" in str(log["log_message"])
    state = await rt.redis.hgetall(rt.keys.job(str(job_id)))
    assert state[b"status"] == b"queued"

    await run_until_settled(rt)
    assert ran == [1]
    assert await job_status(rt, job_id) == "completed"
    # The dead worker can never record its outcome now.
    now = datetime.now(UTC)
    assert await rt.store.complete("dead-worker", [Success(job_id, 1, now, now)]) == set()


async def test_a_job_that_stalls_max_stalls_times_is_failed_as_a_poison_pill(
    runtime: Runtime,
) -> None:
    rt = runtime
    rt.settings.max_stalls = 2
    rt.settings.stall_requeue_spread = 0.0
    await add_queue(rt, "t-lease-last")
    job_id = await create_job(rt, "t-lease-last", max_attempts=5)
    rescue = LeaseRescue(rt.recovery, rt.settings, rt.redis, rt.keys)
    for stall in (1, 2):
        await rt.migrator().move_due_jobs()
        await rt.store.claim([job_id], f"dead-{stall}", 0.1)
        await wait_for(lambda: lease_expired(rt, job_id), what="lease to expire")
        assert await rescue.run_once() == 1

    row = await job_row(rt, job_id)
    assert row["status"] == "failed"
    assert row["failed_at"] is not None
    assert row["stall_count"] == 2
    assert row["attempt_count"] == 1  # one attempt, run twice, never failed by itself
    assert str(row["last_error_message"]).startswith("stalled 2 times")
    logs = await rt.pool.fetch(
        "SELECT status FROM job_logs WHERE job_id = $1 ORDER BY finished_at", job_id
    )
    assert [r["status"] for r in logs] == ["stalled", "failed"]


async def test_rescued_jobs_are_spread_one_delay_per_job(runtime: Runtime) -> None:
    rt = runtime
    rt.settings.stall_requeue_spread = 60.0
    await add_queue(rt, "t-spread")
    ids = [await create_job(rt, "t-spread") for _ in range(50)]
    await rt.migrator().move_due_jobs()
    await rt.store.claim(ids, "dead-worker", 0.1)
    await wait_for(lambda: lease_expired(rt, ids[0]), what="leases to expire")
    assert await LeaseRescue(rt.recovery, rt.settings).run_once() == 50
    delays = await rt.pool.fetch(
        "SELECT EXTRACT(EPOCH FROM run_at - now())::float8 AS d FROM jobs WHERE id = ANY($1)",
        ids,
    )
    values = sorted(r["d"] for r in delays)
    assert values[0] >= -1 and values[-1] <= 60
    # One draw per job: 50 draws over 60 s collide on a millisecond ~2% of the time, on
    # a microsecond (run_at's resolution) ~0.002% of the time.
    assert len(set(values)) == 50
    assert values[-1] - values[0] > 20  # spread, not together


async def test_a_live_lease_is_left_alone(runtime: Runtime) -> None:
    rt = runtime
    await add_queue(rt, "t-lease-live")
    job_id = await create_job(rt, "t-lease-live")
    await rt.migrator().move_due_jobs()
    await rt.store.claim([job_id], "busy-worker", 60)
    assert await LeaseRescue(rt.recovery, rt.settings).run_once() == 0
    assert await job_status(rt, job_id) == "running"


async def test_redis_data_loss_requeues_in_batches_and_retries_a_failed_batch(
    runtime: Runtime,
) -> None:
    rt = runtime
    await add_queue(rt, "t-flush")
    n = 3000
    await rt.pool.execute(
        "INSERT INTO jobs (queue_name, payload) SELECT 't-flush', '{}' FROM generate_series(1, $1)",
        n,
    )
    reconciler = RedisReconciler(rt.recovery, rt.redis, rt.keys, rt.settings, batch=500)
    await reconciler.run_once()  # first pass: sets the marker; nothing was migrated
    rt.settings.redis_queue_max_depth = 100_000
    await rt.migrator().move_due_jobs()
    assert await reconciler.run_once() == 0  # marker present: nothing to do

    await delete_prefix(rt.redis, rt.settings.redis_prefix)  # Redis loses everything
    batches = 0

    async def fail_the_third_batch() -> None:
        nonlocal batches
        batches += 1
        if batches == 3:
            raise asyncpg.exceptions.QueryCanceledError("statement timeout (injected)")

    reconciler.before_batch = fail_the_third_batch
    with pytest.raises(asyncpg.exceptions.QueryCanceledError):
        await reconciler.run_once()
    # Two batches went back; the marker is still missing, so the next pass goes on.
    assert await rt.pool.fetchval("SELECT count(*) FROM jobs WHERE status = 'queued'") == 1000
    assert not await rt.redis.exists(rt.keys.epoch_marker())

    assert await reconciler.run_once() == n - 1000
    assert await rt.redis.exists(rt.keys.epoch_marker())
    assert await rt.pool.fetchval("SELECT count(*) FROM jobs WHERE status = 'queued'") == n
    assert await reconciler.run_once() == 0


async def test_a_redis_server_that_changed_under_its_marker_requeues_what_was_migrated(
    runtime: Runtime, registry: HandlerRegistry
) -> None:
    # A Sentinel failover promotes a replica that had the marker but not the last
    # pushes (asynchronous replication): the marker names the old primary's run_id.
    rt = runtime
    await add_queue(rt, "t-failover")

    @registry.handler("t-failover")
    async def noop(job: Job) -> None:
        pass

    await rt.pool.execute(
        "INSERT INTO jobs (queue_name, payload) "
        "SELECT 't-failover', '{}' FROM generate_series(1, 20)"
    )
    reconciler = RedisReconciler(rt.recovery, rt.redis, rt.keys, rt.settings)
    assert await reconciler.run_once() == 0
    run_id = (await rt.redis.info("server"))["run_id"]
    assert await rt.redis.get(rt.keys.epoch_marker()) == run_id.encode()
    await rt.migrator().move_due_jobs()
    assert await reconciler.run_once() == 0  # the same server: nothing to do

    await rt.redis.set(rt.keys.epoch_marker(), "f" * 40)  # written by another server
    assert await reconciler.run_once() == 20
    assert await rt.pool.fetchval("SELECT count(*) FROM jobs WHERE status = 'queued'") == 20
    assert await rt.redis.get(rt.keys.epoch_marker()) == run_id.encode()
    # The copies that did survive are dropped by the claim; every job runs once.
    await run_until_settled(rt)
    assert await rt.pool.fetchval("SELECT sum(attempt_count) FROM jobs") == 20

    # A marker from before run_ids were kept is taken over without a requeue.
    await rt.redis.set(rt.keys.epoch_marker(), uuid.uuid4().hex)
    assert await reconciler.run_once() == 0
    assert await rt.redis.get(rt.keys.epoch_marker()) == run_id.encode()


@pytest.fixture
async def app_without_redis(settings: Settings, clean_db: None) -> AsyncIterator[httpx.AsyncClient]:
    settings.redis_url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    settings.redis_timeout = 0.5
    settings.handler_modules = []
    app = create_app(settings, HandlerRegistry())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def test_jobs_are_accepted_while_redis_is_down(app_without_redis: httpx.AsyncClient) -> None:
    client = app_without_redis
    created = await client.post(
        "/jobs", json={"queue_name": "email-sending", "payload": {"to": "a@example.com"}}
    )
    assert created.status_code == 201
    status = await client.get(f"/jobs/{created.json()['job_id']}")
    assert status.status_code == 200
    assert status.json()["status"] == "queued"
    assert status.json()["redis_status"] == "not_in_redis"
    ready = await client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["postgres"] == "ok"
    assert ready.json()["checks"]["redis"].startswith("error")


async def test_startup_warns_when_redis_may_evict_queue_keys(
    caplog: pytest.LogCaptureFixture, tmp_path: object
) -> None:
    import redis.asyncio as aioredis

    with PrivateRedis(extra_args=["--maxmemory-policy", "allkeys-lru"]) as server:
        client = aioredis.Redis.from_url(server.url)
        try:
            with caplog.at_level(logging.WARNING, logger="hybridq"):
                await warn_if_redis_can_evict(client)
            assert "maxmemory-policy" in caplog.text
            assert "allkeys-lru" in caplog.text
            caplog.clear()
            await client.config_set("maxmemory-policy", "noeviction")
            with caplog.at_level(logging.WARNING, logger="hybridq"):
                await warn_if_redis_can_evict(client)
            assert "maxmemory-policy" not in caplog.text
        finally:
            await client.aclose()
    await asyncio.sleep(0)
