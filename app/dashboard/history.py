"""Reading the charts' history: the per-minute and per-quarter-hour hashes that
app.metrics writes beside the counters (fields `<counter>|<queue>` and
`wait_seconds|<bucket>|<queue>`), and wait-time percentiles from their buckets."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import redis.asyncio as aioredis

from app.keys import Keys
from app.metrics import BUCKET_LABELS, BUCKETS, HISTORY_HISTOGRAMS, HISTORY_RESOLUTIONS


@dataclass(frozen=True, slots=True)
class Window:
    name: str
    label: str
    resolution: int  # seconds per point
    points: int


WINDOWS: Final = {
    "hour": Window("hour", "Last hour, per minute", 60, 60),
    "day": Window("day", "Last 24 hours, per 15 minutes", 900, 96),
}
assert all(w.resolution in HISTORY_RESOLUTIONS for w in WINDOWS.values())


@dataclass(slots=True)
class Bucket:
    """One time bucket: counter -> queue -> n, and queue -> wait bucket label -> n."""

    start: int
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    wait: dict[str, dict[str, int]] = field(default_factory=dict)

    def total(self, counter: str, queue: str | None = None) -> int:
        per_queue = self.counters.get(counter, {})
        if queue is not None:
            return per_queue.get(queue, 0)
        return sum(per_queue.values())


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def parse_bucket(start: int, raw: Mapping[bytes | str, bytes | str]) -> Bucket:
    bucket = Bucket(start)
    for key, value in raw.items():
        name, _, rest = _text(key).partition("|")
        n = int(value)
        if name in HISTORY_HISTOGRAMS:
            label, _, queue = rest.partition("|")
            per_queue = bucket.wait.setdefault(queue, {})
            per_queue[label] = per_queue.get(label, 0) + n
        else:
            bucket.counters.setdefault(name, {})[rest] = n
    return bucket


async def read_history(
    redis: aioredis.Redis, keys: Keys, window: Window, now: float | None = None
) -> list[Bucket]:
    """The window's buckets, oldest first, the current (partial) one last: one
    pipeline of HGETALL."""
    now_s = int(time.time() if now is None else now)
    last = now_s - now_s % window.resolution
    starts = [last - i * window.resolution for i in reversed(range(window.points))]
    async with redis.pipeline(transaction=False) as pipe:
        for start in starts:
            pipe.hgetall(keys.metric_history(window.resolution, start))
        results = await pipe.execute()
    return [parse_bucket(start, raw) for start, raw in zip(starts, results, strict=True)]


def merge_wait(buckets: list[Bucket], queue: str | None = None) -> dict[str, int]:
    """The wait-time buckets of several time buckets added up (one queue, or all)."""
    merged: dict[str, int] = {}
    for b in buckets:
        for q, labels in b.wait.items():
            if queue is not None and q != queue:
                continue
            for label, n in labels.items():
                merged[label] = merged.get(label, 0) + n
    return merged


def quantile(buckets: Mapping[str, int], q: float) -> float | None:
    """The q-quantile (0..1) of observations counted in histogram buckets, interpolated
    linearly inside its bucket as Prometheus's histogram_quantile does; None without
    observations. In the +Inf bucket, the largest finite bound is the answer."""
    total = sum(buckets.values())
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    lower = 0.0
    for bound, label in zip(BUCKETS, BUCKET_LABELS, strict=True):
        n = buckets.get(label, 0)
        if n and seen + n >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * max(0.0, rank - seen) / n
        seen += n
        if not math.isinf(bound):
            lower = bound
    return lower
