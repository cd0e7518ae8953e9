"""Bodies of the health routes: liveness, readiness and the queue health report."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.api.common import documented
from app.circuit import CircuitState


class HealthOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})
    status: Literal["ok"]


class ReadyOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"status": "ok", "checks": {"postgres": "ok", "redis": "ok"}},
                {
                    "status": "unavailable",
                    "checks": {"postgres": "ok", "redis": "error: Connection refused"},
                },
            ]
        }
    )
    status: Literal["ok", "unavailable"]
    checks: dict[str, str]


READY_RESPONSES: dict[int | str, dict[str, Any]] = {
    503: documented(
        ReadyOut,
        "PostgreSQL or Redis is unavailable, or an embedded service (worker, migrator, "
        "maintenance) is down; `checks` names which, and why.",
        {
            "redis_down": (
                "Redis refuses connections",
                {
                    "status": "unavailable",
                    "checks": {
                        "postgres": "ok",
                        "redis": "error: Error 111 connecting to 127.0.0.1:6379. "
                        "Connection refused.",
                    },
                },
            ),
            "postgres_hung": (
                "PostgreSQL does not answer in time",
                {
                    "status": "unavailable",
                    "checks": {"postgres": "error: TimeoutError", "redis": "ok"},
                },
            ),
            "worker_down": (
                "The embedded worker crashed and waits to be restarted",
                {
                    "status": "unavailable",
                    "checks": {
                        "migrator": "ok",
                        "maintenance": "ok",
                        "worker": "error: WorkerCrashed: the heartbeat task ended unexpectedly",
                        "postgres": "ok",
                        "redis": "ok",
                    },
                },
            ),
        },
    )
}


class ShardHealth(BaseModel):
    """Redis Cluster: one primary (shard)."""

    shard: str = Field(description="host:port of the primary.")
    status: Literal["healthy", "unhealthy"]
    ping: str | None = None
    memory_used: str | None = None
    connected_clients: int | None = None
    error: str | None = None
    queues: list[str] = Field(description="The queues whose keys this shard holds.")


class RedisHealth(BaseModel):
    status: Literal["healthy", "degraded", "unhealthy"] = Field(
        description="`degraded`: on a Redis Cluster, some shards (see `shards`) do not "
        "answer; only their queues wait."
    )
    ping: str | None = None
    memory_used: str | None = None
    connected_clients: int | None = None
    error: str | None = None
    shards: list[ShardHealth] | None = Field(
        None, description="Redis Cluster only: each primary and the queues it holds."
    )


class WorkersHealth(BaseModel):
    active_workers: int = Field(description="Workers with a heartbeat within VISIBILITY_TIMEOUT.")
    worker_ids: list[str] = Field(description="Their ids (at most 1000).")


class QueueHealthOut(BaseModel):
    """The seed's QueueHealthMonitor report, without its KEYS scan."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "timestamp": "2026-11-28T09:00:00Z",
                    "redis": {
                        "status": "healthy",
                        "ping": "PONG",
                        "memory_used": "1.52M",
                        "connected_clients": 7,
                        "error": None,
                    },
                    "queues": {
                        "queue:{email-sending}:high": 0,
                        "queue:{email-sending}:normal": 12,
                    },
                    "workers": {"active_workers": 1, "worker_ids": ["host-1234-5f2a9c1b"]},
                    "jobs": {"queued": 12, "completed": 9000, "failed": 3},
                    "jobs_exact": True,
                    "jobs_counted_at": "2026-11-30T09:15:02.125Z",
                    "circuit_breakers": [
                        {
                            "kind": "smtp",
                            "target": "smtp.example.com:587",
                            "state": "open",
                            "failures": 5,
                            "retry_in": 12.5,
                            "last_error": "SMTPConnectError: Error connecting to smtp.example.com",
                        }
                    ],
                }
            ]
        }
    )

    timestamp: datetime
    redis: RedisHealth
    queues: dict[str, int] = Field(description="Depth of each Redis list, by key (no prefix).")
    workers: WorkersHealth
    jobs: dict[str, int] = Field(description="Jobs by status in PostgreSQL.")
    jobs_exact: bool = Field(
        description="False: the count took longer than STATS_TIMEOUT and `jobs` holds the "
        "planner's estimates."
    )
    jobs_counted_at: datetime = Field(
        description="When the count of `jobs` began: the counts are as of then (at most "
        "STATS_MAX_AGE seconds ago; the process shares one count between requests)."
    )
    circuit_breakers: list[CircuitState] = Field(
        default_factory=list,
        description="Circuit breakers of SMTP servers and webhook hosts that are open, half "
        "open (one probe let through) or counting failures; healthy ones are not listed.",
    )
