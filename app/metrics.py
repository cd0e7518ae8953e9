"""Metrics whose truth lives in Redis, so every process (API, migrators, workers on any
machine) adds to the same totals and any API process can serve /metrics.

Counters are hashes (field = queue) bumped with HINCRBY; histograms are hashes of
per-bucket counts plus sum and count. Writers add their commands to a pipeline they
already execute (the worker's claim and outcome pipelines, the migrator's push), so a
metric costs no extra round trip. Gauges are not stored: /metrics computes them when it
is scraped (see app.api.metrics).
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import redis.asyncio as aioredis

from app.cluster import is_cluster, per_shard
from app.keys import Keys
from app.redis_batch import Batch, redis_batch

# name -> help text. Exposed as hybridq_jobs_<name>_total{queue}.
COUNTERS: Final = {
    "created": "Jobs created through the HTTP API (POST /jobs and /jobs/batch).",
    "migrated": "Jobs moved from PostgreSQL to Redis by a migrator (each move counts).",
    "started": "Attempts started: claims won by a worker.",
    "completed": "Jobs completed.",
    "failed": "Failed attempts (retried plus dead-lettered).",
    "retried": "Failed attempts after which a retry was scheduled.",
    "dead_lettered": "Jobs whose attempts ran out: they became failed (the dead letters).",
    "replayed": "Dead letters an operator sent back to queued.",
    "cancelled": "Jobs an operator cancelled.",
    "discarded": "Dead letters an operator discarded.",
}

# name -> help text. Exposed as hybridq_job_<name>{queue}.
HISTOGRAMS: Final = {
    "wait_seconds": "Seconds from when a job was due (run_at: its creation or retry time) "
    "to the start of its attempt.",
    "run_seconds": "Seconds a handler ran, per attempt.",
}

BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    math.inf,
)


def bucket_label(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(bound)


BUCKET_LABELS: Final = tuple(bucket_label(b) for b in BUCKETS)

# The history kept for charts: seconds per bucket -> seconds a bucket's hash lives.
# Per minute for the last hours, per quarter of an hour for the last day.
HISTORY_RESOLUTIONS: Final = {60: 3 * 3600, 900: 25 * 3600}
HISTORY_COUNTERS: Final = frozenset({"created", "completed", "failed", "dead_lettered"})
HISTORY_HISTOGRAMS: Final = frozenset({"wait_seconds"})


def bucket_of(seconds: float) -> str:
    """The label of the smallest bucket whose upper bound holds `seconds`."""
    if seconds != seconds:  # NaN
        return "+Inf"
    return BUCKET_LABELS[bisect_left(BUCKETS, seconds)]


class MetricsWriter:
    """Adds metric updates to a caller's Redis pipeline."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        # Key names built once: a worker counts and observes several times per job.
        self._counters = {name: keys.metric_counter(name) for name in COUNTERS}
        self._histograms = {name: keys.metric_histogram(name) for name in HISTOGRAMS}
        self._history_minute = -1
        self._history_keys: list[tuple[str, int]] = []

    def count(self, pipe: Batch, name: str, queue: str, amount: int = 1) -> None:
        key = self._counters.get(name)
        if key is None:
            raise ValueError(f"unknown counter {name!r}")
        if amount:
            pipe.hincrby(key, queue, amount)
            if name in HISTORY_COUNTERS:
                self._history(pipe, f"{name}|{queue}", amount)

    def observe(self, pipe: Batch, name: str, queue: str, seconds: float) -> None:
        key = self._histograms.get(name)
        if key is None:
            raise ValueError(f"unknown histogram {name!r}")
        seconds = max(0.0, seconds)
        bucket = bucket_of(seconds)
        pipe.hincrby(key, f"{queue}|{bucket}", 1)
        pipe.hincrbyfloat(key, f"{queue}|sum", seconds)
        pipe.hincrby(key, f"{queue}|count", 1)
        if name in HISTORY_HISTOGRAMS:
            self._history(pipe, f"{name}|{bucket}|{queue}", 1)

    def _history(self, pipe: Batch, field: str, amount: int) -> None:
        """Add to the current bucket of each resolution (the Batch sums repeated fields
        and sends one EXPIRE per key)."""
        now = int(time.time())
        if now // 60 != self._history_minute:  # the key names change once a minute
            self._history_minute = now // 60
            self._history_keys = [
                (self.keys.metric_history(resolution, now - now % resolution), ttl)
                for resolution, ttl in HISTORY_RESOLUTIONS.items()
            ]
        for key, ttl in self._history_keys:
            pipe.hincrby(key, field, amount)
            pipe.expire(key, ttl)

    async def count_now(
        self, redis: aioredis.Redis, name: str, amounts: Iterable[tuple[str, int]]
    ) -> None:
        """Bump a counter for several queues in one round trip (outside a pipeline)."""
        async with redis_batch(redis) as pipe:
            for queue, amount in amounts:
                self.count(pipe, name, queue, amount)


@dataclass(slots=True)
class HistogramData:
    buckets: dict[str, int] = field(default_factory=dict)  # label -> count in that bucket
    sum: float = 0.0
    count: int = 0

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus buckets: (upper bound, observations <= bound), ending with +Inf."""
        total = 0
        out: list[tuple[str, float]] = []
        for label in BUCKET_LABELS:
            total += self.buckets.get(label, 0)
            out.append((label, float(total)))
        return out


@dataclass(slots=True)
class StoredMetrics:
    counters: dict[str, dict[str, int]]  # name -> queue -> total
    histograms: dict[str, dict[str, HistogramData]]  # name -> queue -> data


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def read_stored_metrics(redis: aioredis.Redis, keys: Keys) -> StoredMetrics:
    """Every counter and histogram, in one pipeline of HGETALLs (on a Redis Cluster, one
    per shard: the hashes of a shard that fails read as empty)."""
    names = [keys.metric_counter(n) for n in COUNTERS] + [
        keys.metric_histogram(n) for n in HISTOGRAMS
    ]
    if is_cluster(redis):
        found: dict[str, Any] = {}
        for _shard, group, result in await per_shard(
            redis, names, str, lambda g: _hgetall(redis, g)
        ):
            if not isinstance(result, BaseException):
                found.update(zip(group, result, strict=True))
        results = [found.get(name, {}) for name in names]
    else:
        results = await _hgetall(redis, names)
    counters: dict[str, dict[str, int]] = {}
    for name, raw in zip(COUNTERS, results[: len(COUNTERS)], strict=True):
        counters[name] = {_text(q): int(v) for q, v in raw.items()}
    histograms: dict[str, dict[str, HistogramData]] = {}
    for name, raw in zip(HISTOGRAMS, results[len(COUNTERS) :], strict=True):
        per_queue: dict[str, HistogramData] = {}
        for f, v in raw.items():
            queue, _, part = _text(f).rpartition("|")
            data = per_queue.setdefault(queue, HistogramData())
            if part == "sum":
                data.sum = float(v)
            elif part == "count":
                data.count = int(v)
            else:
                data.buckets[part] = int(v)
        histograms[name] = per_queue
    return StoredMetrics(counters=counters, histograms=histograms)


async def _hgetall(redis: aioredis.Redis, names: list[str]) -> list[Any]:
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(name)
        return list(await pipe.execute())
