"""GET /metrics in the Prometheus text format.

Counters and histograms are read from Redis, where every process (API, migrators,
workers on any machine) adds to them; gauges are computed now (Redis list depths, live
workers), but for jobs by queue and status in PostgreSQL, which come from the process's
shared snapshot of counts (app.counts_cache: at most STATS_MAX_AGE old, its age a gauge of
its own). A fresh registry with one custom collector renders one scrape's readings.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from app.api.common import UNAVAILABLE_EXAMPLES, MessageOut, documented
from app.api.deps import RuntimeDep
from app.circuit import CircuitState, circuit_states
from app.cluster import is_cluster
from app.counts_cache import CountsSnapshot
from app.metrics import COUNTERS, HISTOGRAMS, StoredMetrics, read_stored_metrics
from app.observe import LiveWorkers, ShardState, live_workers, redis_depths, redis_shards

router = APIRouter(tags=["metrics"])

EXAMPLE = """# HELP hybridq_jobs_completed_total Jobs completed.
# TYPE hybridq_jobs_completed_total counter
hybridq_jobs_completed_total{queue="email-sending"} 9000.0
# HELP hybridq_job_run_seconds Seconds a handler ran, per attempt.
# TYPE hybridq_job_run_seconds histogram
hybridq_job_run_seconds_bucket{le="0.005",queue="email-sending"} 8500.0
...
hybridq_redis_queue_depth{level="high",queue="email-sending"} 3.0
hybridq_workers_live 4.0
"""


class SnapshotCollector(Collector):
    """Yields the metric families of one scrape's readings."""

    def __init__(
        self,
        stored: StoredMetrics,
        snapshot: CountsSnapshot,
        counts_age: float,
        depths: dict[str, dict[str, int]],
        workers: LiveWorkers,
        circuits: list[CircuitState] | None = None,
        shards: list[ShardState] | None = None,
    ) -> None:
        self.stored = stored
        self.counts = snapshot.counts
        self.counts_age = counts_age
        self.depths = depths
        self.workers = workers
        self.circuits = circuits or []
        self.shards = shards

    def collect(self) -> Iterator[Metric]:
        for name, help_text in COUNTERS.items():
            counter = CounterMetricFamily(f"hybridq_jobs_{name}", help_text, labels=["queue"])
            for queue, value in sorted(self.stored.counters.get(name, {}).items()):
                counter.add_metric([queue], value)
            yield counter
        for name, help_text in HISTOGRAMS.items():
            histogram = HistogramMetricFamily(f"hybridq_job_{name}", help_text, labels=["queue"])
            for queue, data in sorted(self.stored.histograms.get(name, {}).items()):
                histogram.add_metric([queue], data.cumulative(), sum_value=data.sum)
            yield histogram

        jobs = GaugeMetricFamily(
            "hybridq_jobs",
            "Jobs in PostgreSQL by queue and status (absent when the count timed out).",
            labels=["queue", "status"],
        )
        for queue, by_status in sorted(self.counts.by_queue.items()):
            for status, n in sorted(by_status.items()):
                jobs.add_metric([queue, status], n)
        yield jobs
        estimated = GaugeMetricFamily(
            "hybridq_jobs_by_status",
            "Jobs in PostgreSQL by status: exact, or the planner's estimate when the exact "
            "count timed out (see hybridq_job_counts_exact).",
            labels=["status"],
        )
        for status, n in sorted(self.counts.by_status.items()):
            estimated.add_metric([status], n)
        yield estimated
        yield GaugeMetricFamily(
            "hybridq_job_counts_exact",
            "1 if the job counts of this scrape are exact, 0 if they are estimates.",
            value=1 if self.counts.exact else 0,
        )
        yield GaugeMetricFamily(
            "hybridq_job_counts_age_seconds",
            "Seconds since the count of hybridq_jobs and hybridq_jobs_by_status began "
            "(shared by the process's requests for up to STATS_MAX_AGE).",
            value=self.counts_age,
        )
        depth = GaugeMetricFamily(
            "hybridq_redis_queue_depth",
            "Jobs waiting in each Redis list of a queue.",
            labels=["queue", "level"],
        )
        for queue, levels in sorted(self.depths.items()):
            for level, n in levels.items():
                depth.add_metric([queue, level], n)
        yield depth
        yield GaugeMetricFamily(
            "hybridq_workers_live",
            "Workers with a heartbeat within VISIBILITY_TIMEOUT.",
            value=self.workers.count,
        )
        yield from self._circuits()
        if self.shards is not None:
            yield from self._shards(self.shards)

    def _shards(self, shards: list[ShardState]) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "hybridq_redis_shard_up",
            "Redis Cluster: 1 if the primary answers, 0 if not (its queues wait).",
            labels=["shard"],
        )
        held = GaugeMetricFamily(
            "hybridq_redis_queue_shard",
            "Redis Cluster: 1 for the shard (primary) that holds each queue's keys.",
            labels=["queue", "shard"],
        )
        for s in shards:
            up.add_metric([s.shard], 1 if s.server is not None else 0)
            for queue in s.queues:
                held.add_metric([queue, s.shard], 1)
        yield up
        yield held

    def _circuits(self) -> Iterator[Metric]:
        # Only breakers that are not healthy are stored, so a healthy one has no series.
        is_open = GaugeMetricFamily(
            "hybridq_circuit_breaker_open",
            "1 while a circuit breaker holds jobs for its destination back (open or "
            "half open), 0 while it counts failures.",
            labels=["kind", "target"],
        )
        failures = GaugeMetricFamily(
            "hybridq_circuit_breaker_failures",
            "Connection failures in a row to the destination of a circuit breaker.",
            labels=["kind", "target"],
        )
        for c in self.circuits:
            is_open.add_metric([c.kind, c.target], 0 if c.state == "closed" else 1)
            failures.add_metric([c.kind, c.target], c.failures)
        yield is_open
        yield failures


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    description="Counters (jobs created, migrated, started, completed, failed, retried, "
    "dead-lettered, replayed, cancelled, discarded) and histograms (wait time from run_at "
    "to start; run duration), by queue, totalled across every process through Redis; "
    "gauges of Redis list depths, live workers and circuit breakers that are not "
    "healthy, computed at the scrape, and of jobs in PostgreSQL by queue and status, "
    "counted at most STATS_MAX_AGE seconds ago (hybridq_job_counts_age_seconds). On a "
    "Redis Cluster, each shard's state (hybridq_redis_shard_up) and the shard of each "
    "queue; a shard that is down leaves its series out rather than failing the scrape.",
    response_class=Response,
    responses={
        200: {
            "content": {CONTENT_TYPE_LATEST: {"example": EXAMPLE}},
            "description": "The Prometheus text exposition format.",
        },
        503: documented(MessageOut, "PostgreSQL or Redis is unavailable.", UNAVAILABLE_EXAMPLES),
    },
)
async def metrics(rt: RuntimeDep) -> Response:
    stored = await read_stored_metrics(rt.redis, rt.keys)
    snapshot = await rt.counts.get()
    queues = [q.name for q in await rt.queues.list_queues(after=None, limit=10_000)]
    depths = await redis_depths(rt.redis, rt.keys, queues)
    shards: list[ShardState] | None = None
    workers = LiveWorkers(count=0, ids=[])
    circuits: list[CircuitState] = []
    if is_cluster(rt.redis):
        # A shard that is down leaves its series out; hybridq_redis_shard_up says which.
        shards = await redis_shards(rt.redis, rt.keys, queues)
        with contextlib.suppress(Exception):
            workers = await live_workers(rt.redis, rt.keys, rt.settings.visibility_timeout)
        with contextlib.suppress(Exception):
            circuits = await circuit_states(rt.redis, rt.keys)
    else:
        workers = await live_workers(rt.redis, rt.keys, rt.settings.visibility_timeout)
        circuits = await circuit_states(rt.redis, rt.keys)
    registry = CollectorRegistry(auto_describe=False)
    age = rt.counts.age_of(snapshot)
    registry.register(SnapshotCollector(stored, snapshot, age, depths, workers, circuits, shards))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
