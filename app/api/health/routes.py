"""Health: cheap liveness for load balancers, readiness of PostgreSQL and Redis (both
public), and the queue health report (admin: GET /health/queues, the seed's
QueueHealthMonitor, built without KEYS or any scan of the keyspace)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.api.common import UNAVAILABLE_EXAMPLES, MessageOut, documented
from app.api.deps import RuntimeDep
from app.api.health.schemas import (
    READY_RESPONSES,
    HealthOut,
    QueueHealthOut,
    ReadyOut,
    RedisHealth,
    ShardHealth,
    WorkersHealth,
)
from app.circuit import CircuitState, circuit_states
from app.cluster import is_cluster, ping
from app.observe import live_workers, redis_depths, redis_server, redis_shards
from app.runtime import Runtime

router = APIRouter(prefix="/health", tags=["health"])
# The queue report needs an admin key; liveness and readiness stay public.
admin_router = APIRouter(prefix="/health", tags=["health"])

READY_TIMEOUT = 2.0


@router.get(
    "",
    response_model=HealthOut,
    summary="Liveness",
    description="No I/O: the process is up.",
    response_description="The process is up.",
)
async def health() -> HealthOut:
    return HealthOut(status="ok")


@router.get(
    "/ready",
    response_model=ReadyOut,
    summary="Readiness",
    description="Checks PostgreSQL, Redis and the background services this process "
    "embeds (worker, migrator, maintenance); 503 names the one that failed.",
    response_description="PostgreSQL and Redis answer and every embedded service runs.",
    responses=READY_RESPONSES,
)
async def ready(rt: RuntimeDep, request: Request) -> JSONResponse:
    async def check_postgres() -> None:
        await rt.pool.fetchval("SELECT 1", timeout=READY_TIMEOUT)

    async def check_redis() -> None:
        await ping(rt.redis, READY_TIMEOUT / 2)  # Redis Cluster: one primary answers

    checks: dict[str, str] = {}
    # The embedded services (worker, migrator, maintenance): "ok", or why one is down.
    services = getattr(request.app.state, "services", None)
    if services is not None:
        checks.update(services.health())
    for name, check in (("postgres", check_postgres), ("redis", check_redis)):
        try:
            await asyncio.wait_for(check(), READY_TIMEOUT)
            checks[name] = "ok"
        except Exception as exc:
            # A timeout's message is empty: then its type is the reason.
            checks[name] = f"error: {str(exc) or type(exc).__name__}"[:200]
    ok = all(v == "ok" for v in checks.values())
    body = ReadyOut(status="ok" if ok else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@admin_router.get(
    "/queues",
    response_model=QueueHealthOut,
    summary="Queue health",
    response_description="Redis, queue depths, live workers and job counts.",
    description="Redis (ping, memory used, connected clients), the depth of every queue's "
    "Redis lists, the workers with a live heartbeat (from the heartbeat index: no key "
    "scan), the jobs by status in PostgreSQL (as of `jobs_counted_at`, at most "
    "STATS_MAX_AGE seconds ago; estimates if counting takes longer than STATS_TIMEOUT) "
    "and the circuit breakers that are open or counting failures. A Redis outage is "
    "reported in `redis`, not as an error. On a Redis Cluster, `redis.shards` lists "
    "each primary, whether it answers and the queues it holds; `degraded` when some do "
    "not (their queues' depths are then left out).",
    responses={503: documented(MessageOut, "PostgreSQL is unavailable.", UNAVAILABLE_EXAMPLES)},
)
async def queue_health(rt: RuntimeDep) -> QueueHealthOut:
    queues = [q.name for q in await rt.queues.list_queues(after=None, limit=10_000)]
    snapshot = await rt.counts.get()
    counts = snapshot.counts
    depths: dict[str, int] = {}
    workers = WorkersHealth(active_workers=0, worker_ids=[])
    circuits: list[CircuitState] = []
    cluster = is_cluster(rt.redis)
    try:
        if cluster:
            redis = await cluster_health(rt, queues)
        else:
            server = await redis_server(rt.redis)
            redis = RedisHealth(
                status="healthy",
                ping=server.ping,
                memory_used=server.memory_used,
                connected_clients=server.connected_clients,
            )
        prefix = len(rt.keys.prefix)
        for q, levels in (await redis_depths(rt.redis, rt.keys, queues)).items():
            for level, depth in levels.items():
                depths[rt.keys.queue_list(q, level)[prefix:]] = depth
        # On a Redis Cluster these keys may be on a shard that is down: `shards` says so.
        with contextlib.suppress(*((Exception,) if cluster else ())):
            live = await live_workers(rt.redis, rt.keys, rt.settings.visibility_timeout)
            workers = WorkersHealth(active_workers=live.count, worker_ids=live.ids)
        with contextlib.suppress(*((Exception,) if cluster else ())):
            circuits = await circuit_states(rt.redis, rt.keys)
    except Exception as exc:
        redis = RedisHealth(status="unhealthy", error=f"{type(exc).__name__}: {exc}"[:200])
    if cluster and redis.shards is not None:
        redis.status = _cluster_status(redis.shards)
    return QueueHealthOut(
        timestamp=datetime.now(UTC),
        redis=redis,
        queues=depths,
        workers=workers,
        jobs=counts.by_status,
        jobs_exact=counts.exact,
        jobs_counted_at=snapshot.counted_at,
        circuit_breakers=circuits,
    )


async def cluster_health(rt: Runtime, queues: list[str]) -> RedisHealth:
    """Redis Cluster: every primary, the queues it holds, whether it answers."""
    shards = [
        ShardHealth(
            shard=s.shard,
            status="healthy" if s.server is not None else "unhealthy",
            ping=s.server.ping if s.server else None,
            memory_used=s.server.memory_used if s.server else None,
            connected_clients=s.server.connected_clients if s.server else None,
            error=s.error,
            queues=s.queues,
        )
        for s in await redis_shards(rt.redis, rt.keys, queues)
    ]
    up = [s for s in shards if s.status == "healthy"]
    return RedisHealth(
        status=_cluster_status(shards),
        ping="PONG" if up else None,
        connected_clients=sum(s.connected_clients or 0 for s in up),
        error=None if up else "no shard answers",
        shards=shards,
    )


def _cluster_status(shards: list[ShardHealth]) -> Literal["healthy", "degraded", "unhealthy"]:
    up = sum(s.status == "healthy" for s in shards)
    return "healthy" if up == len(shards) else "degraded" if up else "unhealthy"
