"""Recovery in-process: lease rescue, Redis data loss, popped-but-unclaimed jobs,
Redis outages at the API, and the eviction-policy warning."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

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


async def test_an_expired_lease_fails_the_attempt_and_the_job_runs_again(
    runtime: Runtime, registry: HandlerRegistry
) -> None:
    rt = runtime
    ran: list[int] = []

    @registry.handler("t-lease")
    async def record(job: Job) -> None:
        ran.append(job.attempt)

    await add_queue(rt, "t-lease")
    job_id = await create_job(rt, "t-lease", max_attempts=3)
    await rt.migrator().move_due_jobs()
    # A worker pops and claims, then dies: nobody renews the lease.
    await rt.redis.delete(rt.keys.route("t-lease", 100))
    (claim,) = await rt.store.claim([job_id], "dead-worker", 0.2)
    await wait_for(lambda: lease_expired(rt, job_id), what="lease to expire")

    rescued = await LeaseRescue(rt.recovery, rt.settings).run_once()

    assert rescued == 1
    row = await job_row(rt, job_id)
    assert row["status"] == "scheduled"  # retried after its backoff
    assert row["last_error_message"] == "lease expired: worker dead-worker stopped responding"
    log = await rt.pool.fetchrow("SELECT * FROM job_logs WHERE job_id = $1", job_id)
    assert log is not None
    assert log["attempt_number"] == claim.attempt == 1
    assert log["status"] == "failed"
    assert log["worker_id"] == "dead-worker"
    assert str(log["log_message"]).startswith("lease expired: worker dead-worker")

    await run_until_settled(rt)
    assert ran == [2]
    assert await job_status(rt, job_id) == "completed"
    # The dead worker can never record its outcome now.
    from datetime import UTC, datetime

    from app.db.rows import Success

    now = datetime.now(UTC)
    assert await rt.store.complete("dead-worker", [Success(job_id, 1, now, now)]) == set()


async def test_an_expired_lease_on_the_last_attempt_fails_the_job(runtime: Runtime) -> None:
    rt = runtime
    await add_queue(rt, "t-lease-last")
    job_id = await create_job(rt, "t-lease-last", max_attempts=1)
    await rt.migrator().move_due_jobs()
    await rt.store.claim([job_id], "dead-worker", 0.1)
    await wait_for(lambda: lease_expired(rt, job_id), what="lease to expire")

    await LeaseRescue(rt.recovery, rt.settings).run_once()

    row = await job_row(rt, job_id)
    assert row["status"] == "failed"
    assert row["failed_at"] is not None


async def test_a_live_lease_is_left_alone(runtime: Runtime) -> None:
    rt = runtime
    await add_queue(rt, "t-lease-live")
    job_id = await create_job(rt, "t-lease-live")
    await rt.migrator().move_due_jobs()
    await rt.store.claim([job_id], "busy-worker", 60)
    assert await LeaseRescue(rt.recovery, rt.settings).run_once() == 0
    assert await job_status(rt, job_id) == "running"


async def test_redis_data_loss_pushes_every_migrated_job_again(
    runtime: Runtime, registry: HandlerRegistry
) -> None:
    rt = runtime
    ran: list[uuid.UUID] = []

    @registry.handler("t-flush")
    async def record(job: Job) -> None:
        ran.append(job.id)

    await add_queue(rt, "t-flush")
    jobs = {await create_job(rt, "t-flush") for _ in range(20)}
    reconciler = RedisReconciler(rt.recovery, rt.redis, rt.keys, rt.settings)
    await reconciler.run_once()  # first pass: sets the marker; nothing was migrated
    await rt.migrator().move_due_jobs()
    assert await reconciler.run_once() == 0  # marker present: nothing to do

    await delete_prefix(rt.redis, rt.settings.redis_prefix)  # Redis loses everything
    assert await reconciler.run_once() == 20
    assert await rt.pool.fetchval("SELECT count(*) FROM jobs WHERE status = 'queued'") == 20

    await run_until_settled(rt)
    assert sorted(ran) == sorted(jobs)


async def test_a_job_popped_but_never_claimed_is_queued_again(
    runtime: Runtime, registry: HandlerRegistry, settings: Settings
) -> None:
    rt = runtime
    settings.stale_migrated_after = 0.2

    @registry.handler("t-unclaimed")
    async def noop(job: Job) -> None:
        return None

    await add_queue(rt, "t-unclaimed")
    lost = await create_job(rt, "t-unclaimed", priority=10)
    waiting = await create_job(rt, "t-unclaimed", priority=100)
    reconciler = RedisReconciler(rt.recovery, rt.redis, rt.keys, rt.settings)
    await reconciler.recover_lost_data()  # marker set
    await rt.migrator().move_due_jobs()
    # A worker pops the urgent job and dies before its claim.
    assert await rt.redis.rpop(rt.keys.route("t-unclaimed", 10))

    async def both_stale() -> bool:
        return len(await rt.recovery.stale_migrated(0.2, 10)) == 2

    await wait_for(both_stale, what="jobs to be stale")
    assert await reconciler.run_once() == 1

    assert await job_status(rt, lost) == "queued"
    assert await job_status(rt, waiting) == "migrated_to_redis"  # still in its list
    await run_until_settled(rt)
    assert await job_status(rt, lost) == "completed"
    assert await job_status(rt, waiting) == "completed"


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
