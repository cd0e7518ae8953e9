"""Health: cheap liveness for load balancers, readiness of PostgreSQL and Redis (both
public), and the queue health report (admin: GET /health/queues, the seed's
QueueHealthMonitor, built without KEYS or any scan of the keyspace)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

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
    WorkersHealth,
)
from app.circuit import CircuitState, circuit_states
from app.observe import live_workers, redis_depths, redis_server

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
        await rt.redis.ping()

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
    "reported in `redis`, not as an error.",
    responses={503: documented(MessageOut, "PostgreSQL is unavailable.", UNAVAILABLE_EXAMPLES)},
)
async def queue_health(rt: RuntimeDep) -> QueueHealthOut:
    queues = [q.name for q in await rt.queues.list_queues(after=None, limit=10_000)]
    snapshot = await rt.counts.get()
    counts = snapshot.counts
    depths: dict[str, int] = {}
    workers = WorkersHealth(active_workers=0, worker_ids=[])
    circuits: list[CircuitState] = []
    try:
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
        live = await live_workers(rt.redis, rt.keys, rt.settings.visibility_timeout)
        workers = WorkersHealth(active_workers=live.count, worker_ids=live.ids)
        circuits = await circuit_states(rt.redis, rt.keys)
    except Exception as exc:
        redis = RedisHealth(status="unhealthy", error=f"{type(exc).__name__}: {exc}"[:200])
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
