"""The direct path (app.direct): a job due now is pushed to Redis by its producer right
after its commit, and a crash or a failure at any step still ends with the job run once,
through the in-flight recovery and the claim."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from app.db.inserts import InsertStore, insert_jobs
from app.direct import BUSY_GAP, DirectPlan, DirectPush
from app.jobs.model import InsertResult, JobToInsert
from app.main import create_app, serving
from app.maintenance.inflight import InflightRecovery
from app.migrator.mover import NOTIFY_CHANNEL
from app.producer import JobClient
from app.registry import HandlerRegistry, Job
from app.runtime import Runtime, open_runtime
from app.settings import Settings
from tests.support.factories import add_queue, job_status

QUEUE = "t-direct"


@pytest.fixture
def direct_settings(settings: Settings) -> Settings:
    # A short visibility timeout: the recovery of an unpushed job is then quick to see.
    return settings.replace(direct_push=True, visibility_timeout=1.0, worker_fetch_timeout=0.2)


@pytest.fixture
def ran(registry: HandlerRegistry) -> list[tuple[uuid.UUID, int]]:
    runs: list[tuple[uuid.UUID, int]] = []

    @registry.handler(QUEUE)
    async def record(job: Job) -> None:
        runs.append((job.id, job.attempt))

    return runs


@pytest.fixture
async def rt(
    direct_settings: Settings, registry: HandlerRegistry, runtime: Runtime
) -> AsyncIterator[Runtime]:
    """A runtime with the direct path on (the suite's default settings turn it off)."""
    async with open_runtime(direct_settings, registry) as rt:
        await add_queue(rt, QUEUE)
        # Set by the reconciler when Redis holds every migrated job: the direct path
        # runs only while it is there.
        await rt.redis.set(rt.keys.epoch_marker(), "test")
        # Each insert as if after an idle moment, whatever the machine's speed: a stream
        # of inserts has a test of its own.
        assert rt.inserts.direct is not None
        rt.inserts.direct.busy_gap = 0.0
        yield rt


def job(priority: int | None = None, run_at: datetime | None = None) -> JobToInsert:
    return JobToInsert(queue_name=QUEUE, payload_json='{"n": 1}', priority=priority, run_at=run_at)


async def lists(rt: Runtime) -> dict[str, int]:
    """What Redis holds of the queue once the pushes asked for so far were made."""
    if rt.inserts.direct is not None:
        await rt.inserts.direct.flushed()
    high, normal, low = rt.keys.queue_lists(QUEUE)
    return {
        "high": await rt.redis.llen(high),
        "normal": await rt.redis.llen(normal),
        "low": await rt.redis.llen(low),
        "inflight": await rt.redis.zcard(rt.keys.inflight(QUEUE)),
    }


async def test_a_due_job_is_in_redis_when_its_insert_returns(
    rt: Runtime, ran: list[tuple[uuid.UUID, int]]
) -> None:
    (result,) = await rt.inserts.insert_each([job(priority=10)], key_ttl=0)
    assert result.job is not None
    assert result.job.status == "migrated_to_redis"
    assert await job_status(rt, result.job.id) == "migrated_to_redis"
    # In the list its priority routes it to, with no in-flight entry left behind, and
    # with no migrator at all.
    assert await lists(rt) == {"high": 1, "normal": 0, "low": 0, "inflight": 0}
    assert await rt.redis.hget(rt.keys.job(str(result.job.id)), "status") == b"migrated_to_redis"
    await rt.worker(burst=True).run()
    assert ran == [(result.job.id, 1)]
    assert await job_status(rt, result.job.id) == "completed"


async def test_jobs_the_migrator_must_pace_or_wait_for_take_its_path(rt: Runtime) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    results = await rt.inserts.insert_each([job(), job(run_at=later)], key_ttl=0)
    assert [r.job.status for r in results if r.job] == ["migrated_to_redis", "scheduled"]
    # A paused queue, and a queue with a limit: written queued, nothing left in Redis
    # (the producer's view of the queue is a second old at most; the INSERT decides).
    await rt.pool.execute("UPDATE job_queues SET is_active = false WHERE name = $1", QUEUE)
    (paused,) = await rt.inserts.insert_each([job()], key_ttl=0)
    await rt.pool.execute(
        "UPDATE job_queues SET is_active = true, max_running = 5 WHERE name = $1", QUEUE
    )
    (limited,) = await rt.inserts.insert_each([job()], key_ttl=0)
    assert paused.job is not None and limited.job is not None
    assert (paused.job.status, limited.job.status) == ("queued", "queued")
    assert await lists(rt) == {"high": 0, "normal": 1, "low": 0, "inflight": 0}


async def test_a_default_priority_changed_under_the_producer_is_not_misrouted(
    rt: Runtime,
) -> None:
    await rt.inserts.insert_each([job()], key_ttl=0)  # the producer reads the queue: 100
    await rt.pool.execute("UPDATE job_queues SET default_priority = 10 WHERE name = $1", QUEUE)
    (result,) = await rt.inserts.insert_each([job()], key_ttl=0)
    # Its message would have gone to the normal list: written queued, for the migrator,
    # which routes it by the priority it has (high).
    assert result.job is not None and result.job.status == "queued"
    assert (await rt.migrator().move_due_jobs()).moved == 1
    assert await lists(rt) == {"high": 1, "normal": 1, "low": 0, "inflight": 0}


class CrashAfterCommit(DirectPush):
    """The producer dies between its commit and its push."""

    def after_commit(self, plan: DirectPlan, results: Sequence[InsertResult] | None) -> None:
        return None


def crashing(rt: Runtime) -> InsertStore:
    assert rt.inserts.direct is not None
    direct = rt.inserts.direct
    crash = CrashAfterCommit.of(rt.pool, rt.redis, rt.keys, rt.settings)
    assert direct.insert_timeout == crash.insert_timeout
    return InsertStore(rt.pool, crash)


async def recover_when_expired(rt: Runtime) -> int:
    """Run the in-flight recovery until it pushes something back (its entries expire
    VISIBILITY_TIMEOUT after they were recorded, by the Redis clock)."""
    recovery = InflightRecovery(rt.recovery, rt.redis, rt.keys, rt.settings)
    for _ in range(100):
        pushed = await recovery.recover([QUEUE])
        if pushed:
            return pushed
        await asyncio.sleep(0.05)  # waiting for time itself: the entries' expiry
    raise AssertionError("nothing was recovered")


async def test_a_job_whose_producer_died_after_its_commit_runs_once(
    rt: Runtime, ran: list[tuple[uuid.UUID, int]]
) -> None:
    store = crashing(rt)
    results = await store.insert_each([job(), job()], key_ttl=0)
    ids = [r.job.id for r in results if r.job is not None]
    assert [await job_status(rt, i) for i in ids] == ["migrated_to_redis"] * 2
    # Committed, never pushed: only the in-flight entries know.
    assert await lists(rt) == {"high": 0, "normal": 0, "low": 0, "inflight": 2}
    await rt.worker(burst=True).run()
    assert ran == []
    assert await recover_when_expired(rt) == 2
    await rt.worker(burst=True).run()
    assert sorted(ran) == sorted((i, 1) for i in ids)
    assert [await job_status(rt, i) for i in ids] == ["completed"] * 2
    assert await lists(rt) == {"high": 0, "normal": 0, "low": 0, "inflight": 0}


async def test_a_copy_of_a_job_that_was_never_committed_is_dropped(
    rt: Runtime, ran: list[tuple[uuid.UUID, int]]
) -> None:
    # The producer recorded its entries, then died before its INSERT ran (or the INSERT
    # failed): the recovery pushes copies of jobs that do not exist, and the claim drops
    # them.
    assert rt.inserts.direct is not None
    plan = await rt.inserts.direct.plan([job(), job()], [uuid.uuid4(), uuid.uuid4()])
    assert plan is not None
    assert await recover_when_expired(rt) == 2
    await rt.worker(burst=True).run()
    assert ran == []
    assert await lists(rt) == {"high": 0, "normal": 0, "low": 0, "inflight": 0}


async def test_a_rolled_back_batch_leaves_nothing_in_redis(rt: Runtime) -> None:
    with_unknown = [job(), dataclasses.replace(job(), queue_name="no-such-queue")]
    results = await rt.inserts.insert_jobs(with_unknown, key_ttl=0)
    assert [r.outcome for r in results] == ["created", "unknown_queue"]
    assert await rt.pool.fetchval("SELECT count(*) FROM jobs") == 0
    assert await lists(rt) == {"high": 0, "normal": 0, "low": 0, "inflight": 0}


async def test_a_push_that_lands_after_the_recovery_makes_a_copy_the_claim_drops(
    rt: Runtime, ran: list[tuple[uuid.UUID, int]]
) -> None:
    # The push is late (the producer stalled past VISIBILITY_TIMEOUT after its commit):
    # the recovery pushed the message already, and the late push adds a second copy
    # (it cannot tell this from an entry Redis lost with its data). The job runs once.
    assert rt.inserts.direct is not None
    direct = rt.inserts.direct
    jobs = [job()]
    plan = await direct.plan(jobs, [uuid.uuid4()])
    assert plan is not None
    async with rt.pool.acquire() as conn:
        results = await insert_jobs(conn.fetch, jobs, key_ttl=0, plan=plan)
    assert await recover_when_expired(rt) == 1
    direct.after_commit(plan, results)
    assert await lists(rt) == {"high": 0, "normal": 2, "low": 0, "inflight": 0}
    await rt.worker(burst=True).run()
    assert ran == [(plan.ids[0], 1)]
    assert await lists(rt) == {"high": 0, "normal": 0, "low": 0, "inflight": 0}


async def test_without_the_epoch_marker_jobs_take_the_migrators_path(rt: Runtime) -> None:
    # Redis lost its data and the reconciler has not requeued the migrated jobs yet:
    # a job pushed now could be requeued by it, so none is.
    await rt.redis.delete(rt.keys.epoch_marker())
    (result,) = await rt.inserts.insert_each([job()], key_ttl=0)
    assert result.job is not None and result.job.status == "queued"
    assert await lists(rt) == {"high": 0, "normal": 0, "low": 0, "inflight": 0}


async def test_a_queue_that_missed_the_direct_path_skips_it_for_a_while(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each miss costs the insert a Redis round trip (and a drop and a wake-up after): once
    # a job of the queue was written queued (a backlog), or Redis had lost its data, the
    # next inserts of the queue go straight to PostgreSQL for MISS_BACKOFF.
    direct = rt.inserts.direct
    assert direct is not None
    direct.miss_backoff = 3600.0  # the backoff holds for the whole test
    direct.queue_info_ttl = 0.0  # the producer sees the queue added below at once
    sent: list[int] = []
    send = direct._send

    async def counting_send(records: dict[str, list[bytes]], *args: Any) -> set[str]:
        sent.append(sum(len(m) for m in records.values()))
        return await send(records, *args)

    monkeypatch.setattr(direct, "_send", counting_send)
    # A job waits queued (inserted without the direct path, as in a bulk load).
    (waiting,) = await insert_jobs(rt.pool.fetch, [job()], key_ttl=0)
    behind = [await rt.inserts.insert_each([job()], key_ttl=0) for _ in range(3)]
    assert [r.job.status for (r,) in [[waiting], *behind] if r.job] == ["queued"] * 4
    assert [n for n in sent if n] == [1]  # one record: the first insert's
    # Another queue is not held back by this one's backlog.
    await add_queue(rt, "t-direct-other")
    (other,) = await rt.inserts.insert_each(
        [dataclasses.replace(job(), queue_name="t-direct-other")], key_ttl=0
    )
    assert other.job is not None and other.job.status == "migrated_to_redis"
    # Redis lost its data: one record finds the marker gone, the next inserts make none.
    await rt.redis.delete(rt.keys.epoch_marker())
    sent.clear()
    for _ in range(3):
        (result,) = await rt.inserts.insert_each(
            [dataclasses.replace(job(), queue_name="t-direct-other")], key_ttl=0
        )
        assert result.job is not None and result.job.status == "queued"
    assert [n for n in sent if n] == [1]
    # Every job waits for the migrator, which moves them all.
    assert (await rt.migrator().move_due_jobs()).moved == 7


async def test_a_stream_of_inserts_leaves_its_jobs_to_the_migrator(
    rt: Runtime, ran: list[tuple[uuid.UUID, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # An insert that starts within BUSY_GAP of the previous one's end takes the
    # migrator's path: no Redis round trip before its INSERT. One after an idle moment
    # takes the direct path.
    direct = rt.inserts.direct
    assert direct is not None
    (first,) = await rt.inserts.insert_jobs([job()], key_ttl=0)  # reads the queues
    assert first.job is not None and first.job.status == "migrated_to_redis"
    direct.queue_info_ttl = 3600.0  # and no re-read from here on
    await direct.flushed()
    trips: list[tuple[int, int]] = []  # (records, pushes) of each round trip
    send = direct._send

    async def counting_send(
        records: dict[str, list[bytes]], pushes: list[Any], drops: list[Any]
    ) -> set[str]:
        trips.append((sum(len(m) for m in records.values()), len(pushes)))
        return await send(records, pushes, drops)

    monkeypatch.setattr(direct, "_send", counting_send)
    ids = [first.job.id]
    # A stream: each insert follows the last within the gap (made wide here, so that a
    # slow machine's pause cannot make one of them idle).
    direct.busy_gap = 3600.0
    for _ in range(5):
        (result,) = await rt.inserts.insert_jobs([job()], key_ttl=0)
        assert result.job is not None and result.job.status == "queued"
        ids.append(result.job.id)
    await direct.flushed()
    assert trips == []
    assert (await rt.migrator().move_due_jobs()).moved == 5
    # Idle for longer than the gap before each insert: the direct path, a record before
    # each INSERT and a push after it.
    direct.busy_gap = BUSY_GAP
    for _ in range(3):
        await asyncio.sleep(2 * BUSY_GAP)
        (result,) = await rt.inserts.insert_jobs([job()], key_ttl=0)
        assert result.job is not None and result.job.status == "migrated_to_redis"
        ids.append(result.job.id)
        await direct.flushed()
    assert trips == [(1, 0), (0, 1)] * 3
    assert await lists(rt) == {"high": 0, "normal": 9, "low": 0, "inflight": 0}
    await rt.worker(burst=True).run()
    assert sorted(ran) == sorted((job_id, 1) for job_id in ids)


async def test_job_client_with_redis_pushes_and_without_does_not(
    rt: Runtime, direct_settings: Settings
) -> None:
    s = direct_settings
    async with await JobClient.connect(
        s.database_url, redis_url=s.redis_url, redis_prefix=s.redis_prefix
    ) as client:
        pushed = await client.enqueue(QUEUE, {"n": 1})
        assert await job_status(rt, pushed) == "migrated_to_redis"
    async with await JobClient.connect(s.database_url) as client:
        plain = await client.enqueue(QUEUE, {"n": 2})
        assert await job_status(rt, plain) == "queued"
    assert await lists(rt) == {"high": 0, "normal": 1, "low": 0, "inflight": 0}


async def test_post_jobs_answers_with_the_status_written(
    rt: Runtime, direct_settings: Settings, ran: list[tuple[uuid.UUID, int]]
) -> None:
    app = create_app(direct_settings, rt.registry)
    transport = httpx.ASGITransport(app=app)
    async with (
        serving(app, rt),
        httpx.AsyncClient(transport=transport, base_url="http://hybridq.test") as c,
    ):
        created = await c.post("/jobs", json={"queue_name": QUEUE, "payload": {"n": 1}})
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["status"] == "migrated_to_redis"
        assert rt.inserts.direct is not None
        await rt.inserts.direct.flushed()
        await rt.worker(burst=True).run()
        polled = await c.get(f"/jobs/{body['job_id']}")
        assert polled.json()["status"] == "completed"
    assert ran == [(uuid.UUID(body["job_id"]), 1)]


async def test_concurrent_posts_each_run_once_whichever_path_they_took(
    rt: Runtime, direct_settings: Settings, ran: list[tuple[uuid.UUID, int]]
) -> None:
    # Concurrent requests are inserted in batches (the API's group commit). Those of an
    # idle API take the direct path; those of a busy one, whose batches follow each
    # other within the busy gap (made wide here for the second wave), the migrator's.
    # Each answer names the path its job took, and each job runs once.
    assert rt.inserts.direct is not None
    app = create_app(direct_settings, rt.registry)
    transport = httpx.ASGITransport(app=app)
    async with (
        serving(app, rt),
        httpx.AsyncClient(transport=transport, base_url="http://hybridq.test") as c,
    ):

        async def wave(first: int) -> dict[uuid.UUID, str]:
            answers = await asyncio.gather(
                *(
                    c.post("/jobs", json={"queue_name": QUEUE, "payload": {"n": i}})
                    for i in range(first, first + 30)
                )
            )
            assert [a.status_code for a in answers] == [201] * 30
            return {uuid.UUID(a.json()["job_id"]): a.json()["status"] for a in answers}

        idle = await wave(0)
        rt.inserts.direct.busy_gap = 3600.0
        busy = await wave(30)
        assert set(idle.values()) == {"migrated_to_redis"}
        assert set(busy.values()) == {"queued"}
        statuses = idle | busy
        for job_id, status in statuses.items():
            assert await job_status(rt, job_id) == status
        await rt.inserts.direct.flushed()
        assert (await rt.migrator().move_due_jobs()).moved == 30
        await rt.worker(burst=True, concurrency=20).run()
    assert sorted(ran) == sorted((job_id, 1) for job_id in statuses)
    assert await lists(rt) == {"high": 0, "normal": 0, "low": 0, "inflight": 0}


async def wake_ups_before_a_sentinel(rt: Runtime, got: asyncio.Queue[str]) -> list[str]:
    """The wake-ups sent so far: a sentinel sent now arrives after every notification
    committed before it (PostgreSQL delivers them in commit order)."""
    await rt.pool.execute("SELECT pg_notify($1, 'sentinel')", NOTIFY_CHANNEL)
    payloads = []
    while (payload := await asyncio.wait_for(got.get(), timeout=10)) != "sentinel":
        payloads.append(payload)
    return payloads


async def test_the_migrator_is_woken_only_for_jobs_it_must_move(rt: Runtime) -> None:
    listener = await asyncpg.connect(rt.settings.database_url)
    got: asyncio.Queue[str] = asyncio.Queue()
    try:
        await listener.add_listener(NOTIFY_CHANNEL, lambda *args: got.put_nowait(str(args[3])))
        (pushed,) = await rt.inserts.insert_each([job()], key_ttl=0)
        assert pushed.job is not None and pushed.job.status == "migrated_to_redis"
        assert await wake_ups_before_a_sentinel(rt, got) == []
        await rt.pool.execute("UPDATE job_queues SET is_active = false WHERE name = $1", QUEUE)
        (paused,) = await rt.inserts.insert_each([job()], key_ttl=0)
        assert paused.job is not None and paused.job.status == "queued"
        assert await wake_ups_before_a_sentinel(rt, got) == [""]
    finally:
        await listener.close()


async def test_a_job_does_not_overtake_its_queues_backlog(rt: Runtime) -> None:
    # A job waits queued for the migrator (here: written while the queue was paused, as
    # when its Redis lists were full): the next job of the queue waits behind it, and
    # the migrator moves both in order.
    assert rt.inserts.direct is not None
    rt.inserts.direct.queue_info_ttl = 0.0  # the producer reads the queue at every insert
    rt.inserts.direct.miss_backoff = 0.0  # and tries the direct path at every insert
    await rt.pool.execute("UPDATE job_queues SET is_active = false WHERE name = $1", QUEUE)
    (first,) = await rt.inserts.insert_each([job()], key_ttl=0)
    await rt.pool.execute("UPDATE job_queues SET is_active = true WHERE name = $1", QUEUE)
    (second,) = await rt.inserts.insert_each([job()], key_ttl=0)
    assert first.job is not None and second.job is not None
    assert (first.job.status, second.job.status) == ("queued", "queued")
    assert (await rt.migrator().move_due_jobs()).moved == 2
    normal = rt.keys.queue_list(QUEUE, "normal")
    popped_first = await rt.redis.rpop(normal)
    assert popped_first is not None and str(first.job.id).encode() in popped_first
    # With the backlog gone, the direct path again.
    await rt.redis.delete(normal)
    (third,) = await rt.inserts.insert_each([job()], key_ttl=0)
    assert third.job is not None and third.job.status == "migrated_to_redis"


async def test_a_bulk_insert_takes_the_migrators_path(rt: Runtime) -> None:
    assert rt.inserts.direct is not None
    rt.inserts.direct.max_jobs = 3
    rt.inserts.direct.miss_backoff = 0.0
    results = await rt.inserts.insert_each([job() for _ in range(4)], key_ttl=0)
    assert [r.job.status for r in results if r.job] == ["queued"] * 4
    results = await rt.inserts.insert_each([job() for _ in range(3)], key_ttl=0)
    # Behind the four queued ones: the migrator's path too, in order.
    assert [r.job.status for r in results if r.job] == ["queued"] * 3
    assert (await rt.migrator().move_due_jobs()).moved == 7
    results = await rt.inserts.insert_each([job() for _ in range(3)], key_ttl=0)
    assert [r.job.status for r in results if r.job] == ["migrated_to_redis"] * 3
