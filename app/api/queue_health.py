"""GET /health/queues: the seed's QueueHealthMonitor report (Redis, queue depths, workers,
jobs by status), built without KEYS or any scan of the keyspace."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from app.api.deps import AdminDep, RuntimeDep
from app.api.ops_schemas import QueueHealthOut, RedisHealth, WorkersHealth
from app.api.schemas import UNAVAILABLE_EXAMPLES, MessageOut, documented
from app.observe import live_workers, redis_depths, redis_server

router = APIRouter(tags=["health"])


@router.get(
    "/health/queues",
    response_model=QueueHealthOut,
    summary="Queue health",
    response_description="Redis, queue depths, live workers and job counts.",
    description="Redis (ping, memory used, connected clients), the depth of every queue's "
    "Redis lists, the workers with a live heartbeat (from the heartbeat index: no key "
    "scan) and the jobs by status in PostgreSQL (estimates if counting takes longer than "
    "STATS_TIMEOUT). A Redis outage is reported in `redis`, not as an error.",
    responses={503: documented(MessageOut, "PostgreSQL is unavailable.", UNAVAILABLE_EXAMPLES)},
)
async def queue_health(rt: RuntimeDep, admin: AdminDep) -> QueueHealthOut:
    queues = [q.name for q in await admin.list_queues(after=None, limit=10_000)]
    counts = await admin.count_jobs(timeout=rt.settings.stats_timeout)
    depths: dict[str, int] = {}
    workers = WorkersHealth(active_workers=0, worker_ids=[])
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
    except Exception as exc:
        redis = RedisHealth(status="unhealthy", error=f"{type(exc).__name__}: {exc}"[:200])
    return QueueHealthOut(
        timestamp=datetime.now(UTC),
        redis=redis,
        queues=depths,
        workers=workers,
        jobs=counts.by_status,
        jobs_exact=counts.exact,
    )
