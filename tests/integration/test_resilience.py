"""What must not stop a worker or lose an outcome: malformed messages, a read-only Redis
after a failover, row locks held by a migrator that never commits, a crashed service
(supervised and reported by /health/ready), partial outcome flushes, late job-hash
writes, a busy Redis pool, and the log context of sync handlers."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from app.db.hot import JobStore
from app.db.outcomes import OutcomeStore
from app.db.rows import Failure, FailureResult, PermanentFailed, Snoozed, Success
from app.job_state import JobStateCache
from app.main import create_app
from app.redis_batch import redis_batch
from app.registry import HandlerRegistry, Job
from app.runtime import BackgroundServices, Runtime, make_redis
from app.settings import Settings
from app.worker.recorder import OutcomeRecorder
from tests.support.factories import add_queue, create_job, job_status, wait_for
from tests.support.servers import PrivateRedis


async def test_a_malformed_message_is_dropped_and_the_worker_goes_on(
    runtime: Runtime, registry: HandlerRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    rt = runtime
    ran: list[uuid.UUID] = []

    @registry.handler("t-malformed")
    async def record(job: Job) -> None:
        ran.append(job.id)

    await add_queue(rt, "t-malformed")
    key = rt.keys.route("t-malformed", 100)
    await rt.redis.lpush(key, orjson.dumps({"id": str(uuid.uuid4()), "payload": {}}))
    await rt.redis.lpush(key, b"not json")
    job_id = await create_job(rt, "t-malformed")
    await rt.migrator().move_due_jobs()
    with caplog.at_level(logging.ERROR, logger="hybridq.worker"):
        await rt.worker(burst=True).run()
    assert ran == [job_id]
    assert caplog.text.count("dropping malformed message") == 2
    assert await rt.redis.zcard(rt.keys.inflight("t-malformed")) == 0


async def test_a_read_only_redis_after_a_failover_does_not_end_the_worker(
    settings: Settings,
    registry: HandlerRegistry,
    clean_db: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran = asyncio.Event()

    @registry.handler("t-readonly")
    async def record(job: Job) -> None:
        ran.set()

    with PrivateRedis() as primary, PrivateRedis() as replica:
        client = aioredis.Redis.from_url(replica.url)
        await client.replicaof("127.0.0.1", primary.port)
        settings.redis_url = replica.url
        try:
            from app.runtime import open_runtime

            async with open_runtime(settings, registry) as rt:
                await add_queue(rt, "t-readonly")
                job_id = await create_job(rt, "t-readonly")
                worker = rt.worker()
                task = asyncio.create_task(worker.run())
                # Pops are writes (the in-flight record): READONLY on a replica.
                with caplog.at_level(logging.WARNING, logger="hybridq.worker"):

                    async def readonly_pops() -> bool:
                        return "ReadOnlyError" in caplog.text

                    await wait_for(readonly_pops, timeout=10, what="READONLY pops")
                assert not task.done()
                await client.replicaof("NO", "ONE")  # the failover promotes it
                await rt.migrator().move_due_jobs()
                await asyncio.wait_for(ran.wait(), 15)
                worker.stop()
                await task
                await wait_for(
                    lambda: _is(rt, job_id, "completed"), timeout=10, what="job completed"
                )
        finally:
            await client.aclose()


async def _is(rt: Runtime, job_id: uuid.UUID, status: str) -> bool:
    return await job_status(rt, job_id) == status


async def test_a_claim_gives_up_on_a_lock_the_migrator_does_not_release(
    runtime: Runtime,
) -> None:
    rt = runtime
    await add_queue(rt, "t-locked")
    job_id = await create_job(rt, "t-locked")
    await rt.migrator().move_due_jobs()
    async with rt.pool.acquire() as holder, holder.transaction():
        await holder.execute("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", job_id)
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(asyncpg.LockNotAvailableError):
            await rt.store.claim([job_id], "w-1", 30, lock_timeout=0.3)
        waited = asyncio.get_running_loop().time() - t0
    assert 0.25 < waited < 3
    assert await job_status(rt, job_id) == "migrated_to_redis"


async def test_a_move_transaction_left_idle_loses_its_session_and_its_locks(
    runtime: Runtime,
) -> None:
    rt = runtime
    await add_queue(rt, "t-idle")
    job_id = await create_job(rt, "t-idle")
    conn = await asyncpg.connect(rt.settings.database_url)
    try:
        tx = conn.transaction()
        await tx.start()
        moved = await JobStore.move_due_jobs(conn, ["t-idle"], 10, idle_timeout=0.3)
        assert [m.id for m in moved] == [job_id]
        # The migrator hangs here (its push never ends): PostgreSQL ends the session.
        await wait_for(lambda: _is(rt, job_id, "queued"), timeout=5, what="the rollback")
        assert (await rt.store.claim([job_id], "w-1", 30, lock_timeout=1)) == []
    finally:
        conn.terminate()


async def test_a_crashed_embedded_service_is_restarted_and_readiness_names_it(
    settings: Settings, registry: HandlerRegistry, clean_db: None
) -> None:
    class CrashingOnce:
        """A service whose first run fails, as a bug or a lost connection would."""

        def __init__(self) -> None:
            self.runs = 0
            self.release = asyncio.Event()
            self.stopped = asyncio.Event()

        async def run(self) -> None:
            self.runs += 1
            if self.runs == 1:
                await self.release.wait()
                raise RuntimeError("boom")
            await self.stopped.wait()

        def stop(self) -> None:
            self.stopped.set()

    settings.handler_modules = []
    settings.embed_worker = False
    settings.embed_migrator = False
    app = create_app(settings, registry)
    service = CrashingOnce()
    async with app.router.lifespan_context(app):
        services = BackgroundServices(None, None, restart=True)
        services.add("maintenance", service)
        app.state.services = services
        services.start()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/health/ready")).status_code == 200
            service.release.set()

            async def reported() -> bool:
                r = await client.get("/health/ready")
                return r.status_code == 503 and "boom" in r.json()["checks"]["maintenance"]

            await wait_for(reported, timeout=5, what="readiness to name the crash")

            async def restarted() -> bool:
                return (await client.get("/health/ready")).status_code == 200

            await wait_for(restarted, timeout=5, what="the restart")
            assert service.runs == 2
        await services.shutdown(1)


async def test_a_standalone_crash_ends_the_services_with_the_error() -> None:
    class Crashes:
        async def run(self) -> None:
            raise RuntimeError("boom")

        def stop(self) -> None:
            return None

    services = BackgroundServices(None, None, restart=False)
    services.add("migrator", Crashes())
    services.start()
    await asyncio.wait_for(services.wait_first(), 5)
    with pytest.raises(RuntimeError, match="migrator stopped: RuntimeError: boom"):
        await services.wait()


class FailsOnceAfterCompleting(JobStore):
    """The failures' statement raises once (a PostgreSQL blip between two statements of
    one flush), after the completions were written."""

    failed_once = False

    async def fail(self, worker_id: str, failed: Any) -> list[FailureResult]:
        if failed and not self.failed_once:
            self.failed_once = True
            raise asyncpg.exceptions.ConnectionDoesNotExistError("injected")
        return await super().fail(worker_id, failed)


async def test_a_retried_flush_writes_only_the_outcomes_that_did_not_apply(
    runtime: Runtime,
) -> None:
    rt = runtime
    await add_queue(rt, "t-partial")
    ok, bad = await create_job(rt, "t-partial"), await create_job(rt, "t-partial")
    await rt.migrator().move_due_jobs()
    claims = {c.id: c for c in await rt.store.claim([ok, bad], "w-1", 30)}
    store = FailsOnceAfterCompleting(rt.pool)
    recorder = OutcomeRecorder(
        store=store, redis=rt.redis, state=JobStateCache(rt.keys, 60), worker_id="w-1"
    )
    recorder.start()
    now = datetime.now(UTC)
    results = await asyncio.gather(
        recorder.record(Success(ok, 1, now, now, "t-partial", claims[ok].token)),
        recorder.record(Failure(bad, 1, now, now, "boom", 0.0, "t-partial", claims[bad].token)),
    )
    await recorder.close()
    assert store.failed_once
    assert list(results) == [True, True]  # the completion was not reported as discarded
    assert await job_status(rt, ok) == "completed"
    assert await job_status(rt, bad) == "queued"
    state = await rt.redis.hgetall(rt.keys.job(str(ok)))
    assert state[b"status"] == b"completed"


async def test_a_late_migrated_write_does_not_overwrite_a_later_state(
    runtime: Runtime,
) -> None:
    rt = runtime
    cache = JobStateCache(rt.keys, 60)
    job_id = uuid.uuid4()
    now = datetime.now(UTC)

    async def write(step: Any) -> bytes:
        async with redis_batch(rt.redis) as pipe:
            step(pipe)
        value = await rt.redis.hget(rt.keys.job(str(job_id)), "status")
        assert isinstance(value, bytes)
        return value

    assert await write(lambda p: cache.migrated(p, job_id, 0)) == b"migrated_to_redis"
    assert await write(lambda p: cache.completed(p, job_id, now, 1)) == b"completed"
    # The migrator's post-commit write lands after a fast worker's outcome.
    assert await write(lambda p: cache.migrated(p, job_id, 0)) == b"completed"
    # So does the worker's own `running` write.
    assert await write(lambda p: cache.running(p, job_id, "w", now, 1)) == b"completed"
    # A retry after a failed attempt moves on normally.
    other = uuid.uuid4()
    job_id = other
    await write(lambda p: cache.running(p, other, "w", now, 1))
    assert await write(lambda p: cache.failed_attempt(p, other, "queued", "x", 1)) == b"queued"
    assert await write(lambda p: cache.running(p, other, "w", now, 1)) == b"queued"
    assert await write(lambda p: cache.migrated(p, other, 1)) == b"migrated_to_redis"
    assert await write(lambda p: cache.running(p, other, "w", now, 2)) == b"running"


async def test_a_busy_redis_pool_makes_callers_wait_instead_of_failing(
    settings: Settings,
) -> None:
    settings.db_pool_max_size = 4  # the pool: max(16, 2 * 4) = 16 connections
    redis = make_redis(settings)
    try:
        # 48 calls that each hold a connection for 0.2 s: three rounds, none refused.
        results = await asyncio.gather(
            *(redis.blpop([f"{settings.redis_prefix}nothing"], 0.2) for _ in range(48))
        )
        assert results == [None] * 48
    finally:
        await redis.aclose()


async def test_a_sync_handler_logs_with_the_job_context(
    runtime: Runtime, registry: HandlerRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    rt = runtime

    @registry.handler("t-synclog")
    def sync(job: Job) -> None:
        logging.getLogger("user.handler").warning("sending")

    await add_queue(rt, "t-synclog")
    job_id = await create_job(rt, "t-synclog")
    await rt.migrator().move_due_jobs()
    from app.logs import JobContextFilter

    caplog.handler.addFilter(JobContextFilter())
    with caplog.at_level(logging.WARNING, logger="user.handler"):
        await rt.worker(burst=True).run()
    (record,) = [r for r in caplog.records if r.name == "user.handler"]
    assert record.job_id == str(job_id)  # type: ignore[attr-defined]
    assert record.queue == "t-synclog"  # type: ignore[attr-defined]


async def test_the_fence_holds_when_worker_and_attempt_repeat_after_a_lost_claim(
    runtime: Runtime,
) -> None:
    """A claim lost in a PostgreSQL crash leaves the job migrated; if the same worker
    claims it again, worker id and attempt repeat: only the random token tells the two
    runs apart, so the first run's outcome cannot complete the second."""
    rt = runtime
    await add_queue(rt, "t-token")
    job_id = await create_job(rt, "t-token")
    await rt.migrator().move_due_jobs()
    (first,) = await rt.store.claim([job_id], "w-1", 30)
    await rt.pool.execute(  # the claim's asynchronous commit is lost
        "UPDATE jobs SET status = 'migrated_to_redis', attempt_count = 0 WHERE id = $1", job_id
    )
    (second,) = await rt.store.claim([job_id], "w-1", 30)
    assert (first.attempt, second.attempt) == (1, 1)
    assert first.token != second.token
    now = datetime.now(UTC)
    assert await rt.store.complete("w-1", [Success(job_id, 1, now, now, "", first.token)]) == set()
    assert await rt.store.complete("w-1", [Success(job_id, 1, now, now, "", second.token)]) == {
        job_id
    }


async def test_snoozes_and_permanent_failures_are_fenced_by_the_token_too(
    runtime: Runtime,
) -> None:
    """The same repeat as above, for the outcomes a handler reports: the first run's
    snooze or permanent failure cannot land on the second run."""
    rt = runtime
    outcomes = OutcomeStore(rt.pool)
    await add_queue(rt, "t-token-outcomes")
    job_id = await create_job(rt, "t-token-outcomes")
    await rt.migrator().move_due_jobs()
    (first,) = await rt.store.claim([job_id], "w-1", 30)
    await rt.pool.execute(  # the claim's asynchronous commit is lost
        "UPDATE jobs SET status = 'migrated_to_redis', attempt_count = 0 WHERE id = $1", job_id
    )
    (second,) = await rt.store.claim([job_id], "w-1", 30)
    now = datetime.now(UTC)
    stale = PermanentFailed(job_id, 1, now, now, "gone", token=first.token)
    assert await outcomes.fail_permanently("w-1", [stale]) == []
    late = Snoozed(job_id, 1, now, now, 5.0, "later", token=first.token)
    assert await outcomes.snooze("w-1", [late], 3) == []
    assert await job_status(rt, job_id) == "running"
    current = Snoozed(job_id, 1, now, now, 5.0, "later", token=second.token)
    (result,) = await outcomes.snooze("w-1", [current], 3)
    assert result.status == "scheduled"


async def test_an_idle_worker_survives_redis_forgetting_its_scripts(
    settings: Settings, registry: HandlerRegistry, clean_db: None
) -> None:
    ran = asyncio.Event()

    @registry.handler("t-noscript")
    async def record(job: Job) -> None:
        ran.set()

    with PrivateRedis() as server:
        settings.redis_url = server.url
        from app.runtime import open_runtime

        async with open_runtime(settings, registry) as rt:
            await add_queue(rt, "t-noscript")
            worker = rt.worker()
            task = asyncio.create_task(worker.run())
            await wait_for(
                lambda: _script_loaded(rt.redis, worker.fetcher), what="the pop script loaded"
            )
            await rt.redis.script_flush()  # as a Redis restart would
            await create_job(rt, "t-noscript")
            await rt.migrator().move_due_jobs()
            await asyncio.wait_for(ran.wait(), 10)
            worker.stop()
            await task


async def _script_loaded(redis: aioredis.Redis, fetcher: Any) -> bool:
    return bool((await redis.script_exists(fetcher._pop.sha))[0])
