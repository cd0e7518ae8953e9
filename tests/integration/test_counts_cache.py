"""The process's shared snapshot of job counts (app.counts_cache): /metrics, /queues,
/health/queues and the dashboard count at most once at a time, answer from a young
snapshot, refresh it in the background, say how old it is, and live through a count that
fails. The store's own count runs on the real PostgreSQL; a spy around it counts its
calls and can hold or fail them; a test clock stands for time."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import httpx
import pytest

from app.counts_cache import CountsCache
from app.db.rows import JobCounts
from app.runtime import Runtime
from tests.integration.test_observability import samples
from tests.support.factories import add_queue, create_job

QUEUE = "t-counted"
WAIT = 10.0  # seconds any await of this file may take before the test fails


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class SpyCount:
    """`runtime.listings.count_jobs`, with its calls counted. While `gate` is clear a
    call waits (after setting `entered`); an error in `failures` is raised instead of
    counting."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.calls = 0
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()
        self.failures: list[Exception] = []

    async def __call__(self) -> JobCounts:
        self.calls += 1
        self.entered.set()
        await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        return await self.rt.listings.count_jobs(timeout=5.0)


def cache_of(runtime: Runtime, max_age: float = 2.0) -> tuple[CountsCache, SpyCount, Clock]:
    spy, clock = SpyCount(runtime), Clock()
    return CountsCache(spy, max_age=max_age, clock=clock), spy, clock


async def test_concurrent_callers_share_one_count(runtime: Runtime) -> None:
    await add_queue(runtime, QUEUE)
    await create_job(runtime, QUEUE)
    cache, spy, _ = cache_of(runtime)
    spy.gate.clear()
    early = [asyncio.create_task(cache.get()) for _ in range(10)]
    await asyncio.wait_for(spy.entered.wait(), WAIT)
    late = [asyncio.create_task(cache.get()) for _ in range(10)]  # while it counts
    early[0].cancel()  # a caller that gives up does not cancel the others' count
    spy.gate.set()
    snapshots = await asyncio.wait_for(asyncio.gather(*early[1:], *late), WAIT)
    assert spy.calls == 1
    assert all(s is snapshots[0] for s in snapshots)
    assert snapshots[0].counts.by_status == {"queued": 1}


async def test_a_young_snapshot_is_served_refreshed_in_the_background_then_recounted(
    runtime: Runtime,
) -> None:
    await add_queue(runtime, QUEUE)
    await create_job(runtime, QUEUE)
    cache, spy, clock = cache_of(runtime, max_age=2.0)
    first = await cache.get()
    assert first.counts.by_status == {"queued": 1}
    await create_job(runtime, QUEUE)

    clock.now += 0.9  # younger than half the max age: served as it is
    assert await cache.get() is first
    assert spy.calls == 1

    clock.now += 0.2  # past half: still served at once, while a new count runs
    spy.gate.clear()
    assert await asyncio.wait_for(cache.get(), WAIT) is first
    assert await asyncio.wait_for(cache.get(), WAIT) is first  # one refresh at a time
    spy.gate.set()
    await asyncio.wait_for(cache.settled(), WAIT)
    assert spy.calls == 2
    second = await cache.get()
    assert second.counts.by_status == {"queued": 2}
    assert cache.age_of(second) == 0.0 and second.counted_at > first.counted_at

    await create_job(runtime, QUEUE)
    clock.now += 2.0  # as old as the max age: the caller waits for a new count
    third = await cache.get()
    assert spy.calls == 3
    assert third.counts.by_status == {"queued": 3}
    assert cache.age_of(third) == 0.0


async def test_a_max_age_of_zero_counts_at_every_call(runtime: Runtime) -> None:
    await add_queue(runtime, QUEUE)
    cache, spy, _ = cache_of(runtime, max_age=0.0)
    assert (await cache.get()).counts.by_status == {}
    await create_job(runtime, QUEUE)
    assert (await cache.get()).counts.by_status == {"queued": 1}
    assert spy.calls == 2


async def test_a_failed_count_is_logged_and_the_next_caller_counts_again(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    await add_queue(runtime, QUEUE)
    await create_job(runtime, QUEUE)
    cache, spy, clock = cache_of(runtime, max_age=2.0)
    caplog.set_level(logging.WARNING, logger="hybridq")

    # No snapshot yet: the caller gets the error; the next one counts again.
    spy.failures.append(ConnectionError("PostgreSQL went away"))
    with pytest.raises(ConnectionError):
        await cache.get()
    assert "PostgreSQL went away" in caplog.text
    assert cache.last_error == "ConnectionError: PostgreSQL went away"
    first = await cache.get()
    assert first.counts.by_status == {"queued": 1} and cache.last_error is None

    # A background refresh fails: the snapshot is still served while it is young
    # enough, and the next caller starts another count.
    caplog.clear()
    spy.failures.append(ConnectionError("again"))
    clock.now += 1.5
    assert await cache.get() is first
    await asyncio.wait_for(cache.settled(), WAIT)
    assert "again" in caplog.text and cache.last_error is not None
    await create_job(runtime, QUEUE)
    assert await cache.get() is first
    await asyncio.wait_for(cache.settled(), WAIT)
    assert spy.calls == 4
    assert (await cache.get()).counts.by_status == {"queued": 2}
    assert cache.last_error is None


async def test_the_endpoints_share_one_count_and_say_how_old_it_is(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    await add_queue(runtime, QUEUE)
    await create_job(runtime, QUEUE)
    cache, spy, clock = cache_of(runtime, max_age=2.0)
    runtime.counts = cache
    before = datetime.now(UTC)
    spy.gate.clear()
    requests = [
        asyncio.create_task(client.get(path))
        for path in ("/health/queues", "/queues", "/metrics", "/health/queues", "/queues")
    ]
    await asyncio.wait_for(spy.entered.wait(), WAIT)
    spy.gate.set()
    health, queues, metrics, *_ = await asyncio.wait_for(asyncio.gather(*requests), WAIT)
    assert spy.calls == 1

    counted_at = health.json()["jobs_counted_at"]
    assert before <= datetime.fromisoformat(counted_at) <= datetime.now(UTC)
    assert health.json()["jobs"] == {"queued": 1}
    (item,) = [q for q in queues.json()["items"] if q["name"] == QUEUE]
    assert item["counted_at"] == counted_at and item["counts"] == {"queued": 1}
    assert samples(metrics.text)[("hybridq_job_counts_age_seconds", ())] == 0.0

    await create_job(runtime, QUEUE)  # not seen until the next count
    clock.now += 0.75
    m = samples((await client.get("/metrics")).text)
    assert m[("hybridq_job_counts_age_seconds", ())] == 0.75
    assert m[("hybridq_jobs", (("queue", QUEUE), ("status", "queued")))] == 1
    assert (await client.get("/health/queues")).json()["jobs_counted_at"] == counted_at
    assert spy.calls == 1
