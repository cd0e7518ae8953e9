"""A Batch carries a whole flush's cache writes in a few commands, and writes them all."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from app.job_state import JobStateCache
from app.metrics import MetricsWriter
from app.redis_batch import Batch
from app.runtime import Runtime


async def test_a_batch_of_outcomes_is_three_commands_and_writes_everything(
    runtime: Runtime,
) -> None:
    rt = runtime
    state = JobStateCache(rt.keys, 60)
    metrics = MetricsWriter(rt.keys)
    ids = [uuid.uuid4() for _ in range(50)]
    inflight = {q: rt.keys.inflight(q) for q in ("t-a", "t-b")}
    for key in inflight.values():
        await rt.redis.zadd(key, {f"m-{i}".encode(): 1 for i in range(50)})
    await rt.redis.zadd(inflight["t-a"], {b"still-running": 1})
    now = datetime.now(UTC)

    async with rt.redis.pipeline(transaction=False) as pipe:
        batch = Batch(pipe)
        for i, job_id in enumerate(ids):
            queue = "t-a" if i % 2 else "t-b"
            state.completed(batch, job_id, now, 1)
            metrics.count(batch, "completed", queue)
            metrics.observe(batch, "run_seconds", queue, 0.001 * (i + 1))
            batch.zrem(inflight[queue], f"m-{i}".encode())
        batch.flush()
        # One EVAL (hashes, counters, histograms, their history) and one ZREM per set.
        assert len(pipe) == 3
        await pipe.execute()

    stored = await rt.redis.hgetall(rt.keys.job(str(ids[7])))
    assert stored[b"status"] == b"completed"
    assert 0 < await rt.redis.ttl(rt.keys.job(str(ids[7]))) <= 60
    counter = rt.keys.metric_counter("completed")
    assert await rt.redis.hgetall(counter) == {b"t-a": b"25", b"t-b": b"25"}
    histogram = await rt.redis.hgetall(rt.keys.metric_histogram("run_seconds"))
    # The sum of a queue's run times, added once per batch, is not rounded on the way.
    odd = sum(0.001 * (i + 1) for i in range(50) if i % 2)
    assert float(histogram[b"t-a|sum"]) == odd
    assert histogram[b"t-a|count"] == b"25"
    remaining = await rt.redis.zrange(inflight["t-a"], 0, -1)
    assert remaining == sorted(
        [f"m-{i}".encode() for i in range(50) if i % 2 == 0] + [b"still-running"]
    )
    assert await rt.redis.zcard(inflight["t-b"]) == 25
