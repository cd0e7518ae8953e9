"""Bodies of the operators' endpoints (dead letters, job listings and actions, batches,
queues, queue health), with the examples OpenAPI shows."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from app.api.pagination import Page
from app.api.schemas import PRIORITY_MAX, PRIORITY_MIN, JobCreate, JobStatus
from app.db.admin_store import JobLogRow
from app.db.store import JobRow
from app.registry import validate_queue_name

BATCH_MAX = 1000
KEY_MAX = 255
REASON_MAX = 1000

_JOB_EXAMPLE: dict[str, Any] = {
    "job_id": "0b9d6f7e-3f7c-4a36-9a51-2f7f1b0e9c11",
    "queue_name": "email-sending",
    "status": "failed",
    "priority": 75,
    "payload": {"campaign_id": "c-42", "lead_id": "l-7"},
    "attempt_count": 3,
    "max_attempts": 3,
    "run_at": "2026-11-28T09:00:14.120000Z",
    "created_at": "2026-11-28T09:00:00.120000Z",
    "updated_at": "2026-11-28T09:00:14.131000Z",
    "started_at": "2026-11-28T09:00:14.124000Z",
    "completed_at": None,
    "failed_at": "2026-11-28T09:00:14.131000Z",
    "last_error_message": "SMTPError: 550 mailbox unavailable",
    "worker_id": "host-1234-5f2a9c1b",
}


class JobOut(BaseModel):
    """A job as PostgreSQL holds it."""

    model_config = ConfigDict(json_schema_extra={"examples": [_JOB_EXAMPLE]})

    job_id: uuid.UUID
    queue_name: str
    status: JobStatus
    priority: int
    payload: dict[str, Any]
    attempt_count: int
    max_attempts: int
    run_at: datetime
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    failed_at: datetime | None
    last_error_message: str | None
    worker_id: str | None

    @classmethod
    def of(cls, row: JobRow) -> JobOut:
        return cls(
            job_id=row.id,
            queue_name=row.queue_name,
            status=row.status,
            priority=row.priority,
            payload=row.payload,
            attempt_count=row.attempt_count,
            max_attempts=row.max_attempts,
            run_at=row.run_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
            started_at=row.started_at,
            completed_at=row.completed_at,
            failed_at=row.failed_at,
            last_error_message=row.last_error_message,
            worker_id=row.worker_id,
        )


class JobPage(Page[JobOut]):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"items": [_JOB_EXAMPLE], "next_cursor": "WyIyMDI2..."}]}
    )


class JobLogOut(BaseModel):
    """One row of a job's timeline: an attempt (with its worker) or an operator's action
    (with its actor)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "5d1c0a5e-8f0e-4bd4-9a53-8a3c4a1e2b77",
                    "status": "failed",
                    "log_message": "SMTPError: 550 (attempts exhausted)",
                    "attempt_number": 3,
                    "worker_id": "host-1234-5f2a9c1b",
                    "actor": None,
                    "started_at": "2026-11-28T09:00:14.124000Z",
                    "finished_at": "2026-11-28T09:00:14.131000Z",
                    "duration_seconds": 0.007,
                    "created_at": "2026-11-28T09:00:14.131000Z",
                },
                {
                    "id": "a1f0c0a5-8f0e-4bd4-9a53-8a3c4a1e2b77",
                    "status": "replayed",
                    "log_message": "mailbox fixed",
                    "attempt_number": 3,
                    "worker_id": None,
                    "actor": "key:ops",
                    "started_at": "2026-11-28T10:00:00.000000Z",
                    "finished_at": "2026-11-28T10:00:00.000000Z",
                    "duration_seconds": 0.0,
                    "created_at": "2026-11-28T10:00:00.000000Z",
                },
            ]
        }
    )

    id: uuid.UUID
    status: str = Field(
        description="An attempt's outcome (completed, failed, interrupted) or an operator's "
        "action (replayed, cancelled, discarded)."
    )
    log_message: str | None = Field(
        description="The error of an attempt, or why an operator acted."
    )
    attempt_number: int = Field(description="The attempt, or the attempt count at an action.")
    worker_id: str | None
    actor: str | None = Field(description="Who acted (operator actions only).")
    started_at: datetime
    finished_at: datetime | None
    duration_seconds: float | None
    created_at: datetime

    @classmethod
    def of(cls, row: JobLogRow) -> JobLogOut:
        return cls(
            id=row.id,
            status=row.status,
            log_message=row.log_message,
            attempt_number=row.attempt_number,
            worker_id=row.worker_id,
            actor=row.actor,
            started_at=row.started_at,
            finished_at=row.finished_at,
            duration_seconds=row.duration_seconds,
            created_at=row.created_at,
        )


class JobLogPage(Page[JobLogOut]):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": JobLogOut.model_config["json_schema_extra"]["examples"],  # type: ignore[index]
                    "next_cursor": None,
                }
            ]
        }
    )


class ActionOut(BaseModel):
    """The job after an operator's action."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "job_id": "0b9d6f7e-3f7c-4a36-9a51-2f7f1b0e9c11",
                    "queue_name": "email-sending",
                    "status": "queued",
                    "attempt_count": 0,
                }
            ]
        }
    )

    job_id: uuid.UUID
    queue_name: str
    status: JobStatus
    attempt_count: int


class BulkReplayIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "queue_name": "email-sending",
                    "failed_since": "2026-11-28T00:00:00Z",
                    "reason": "SMTP relay fixed",
                }
            ]
        },
    )

    queue_name: str = Field(min_length=1, max_length=100, description="The queue to replay.")
    failed_since: AwareDatetime | None = Field(
        None, description="Only jobs that failed at or after this time; omitted: all."
    )
    reason: str | None = Field(
        None, max_length=REASON_MAX, description="Why: written to each job's log."
    )


class BulkReplayOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"replayed": 42}]})
    replayed: int = Field(description="How many failed jobs went back to queued.")


class BatchJob(JobCreate):
    """A job of a batch: the fields of POST /jobs and an optional idempotency key."""

    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=KEY_MAX,
        description="Like the Idempotency-Key header of POST /jobs, for this item.",
    )


class JobBatchIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "jobs": [
                        {"queue_name": "email-sending", "payload": {"lead_id": "l-1"}},
                        {
                            "queue_name": "webhook:process",
                            "payload": {"url": "https://example.com/hook"},
                            "priority": 20,
                            "idempotency_key": "hook-l-1",
                        },
                    ]
                }
            ]
        },
    )

    # Items are validated one by one (app.api.validation) so that every bad item is
    # reported with its index; the schema below documents their shape.
    jobs: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=BATCH_MAX,
        description=f"1 to {BATCH_MAX} jobs, each with the fields of POST /jobs and an "
        "optional `idempotency_key`.",
        json_schema_extra={"items": BatchJob.model_json_schema()},
    )


class BatchItemOut(BaseModel):
    index: int = Field(description="Position of the item in the request.")
    job_id: uuid.UUID
    status: JobStatus = Field(description="Status at creation (queued).")
    queue_name: str
    priority: int
    created: bool = Field(description="False when an idempotency key found an existing job.")


class JobBatchOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "jobs": [
                        {
                            "index": 0,
                            "job_id": "0b9d6f7e-3f7c-4a36-9a51-2f7f1b0e9c11",
                            "status": "queued",
                            "queue_name": "email-sending",
                            "priority": 100,
                            "created": True,
                        }
                    ]
                }
            ]
        }
    )
    jobs: list[BatchItemOut]


class RedisDepths(BaseModel):
    high: int
    normal: int
    low: int


class QueueOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "email-sending",
                    "default_priority": 100,
                    "is_active": True,
                    "created": "2026-11-28T08:00:00Z",
                    "counts": {"queued": 1200, "migrated_to_redis": 500, "completed": 98000},
                    "counts_exact": True,
                    "redis_depth": {"high": 12, "normal": 480, "low": 8},
                    "oldest_due_age_seconds": 2.4,
                }
            ]
        }
    )

    name: str
    default_priority: int
    is_active: bool = Field(description="False: paused; jobs are accepted but not moved.")
    created: datetime
    counts: dict[str, int] | None = Field(
        description="Jobs by status in PostgreSQL; null when counting took longer than "
        "STATS_TIMEOUT."
    )
    counts_exact: bool
    redis_depth: RedisDepths = Field(description="Length of each of its three Redis lists.")
    oldest_due_age_seconds: float | None = Field(
        description="Age of its oldest due job not yet started (queued and due, or waiting "
        "in Redis), measured from its run_at; null if none."
    )


class QueuePage(Page[QueueOut]):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": QueueOut.model_config["json_schema_extra"]["examples"],  # type: ignore[index]
                    "next_cursor": None,
                }
            ]
        }
    )


class QueueCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"name": "sms-sending", "default_priority": 80, "is_active": True}]
        },
    )

    name: str = Field(min_length=1, max_length=100, description="1-100 characters, no whitespace.")
    default_priority: int = Field(100, ge=PRIORITY_MIN, le=PRIORITY_MAX)
    is_active: bool = True

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        validate_queue_name(value)
        return value


class QueueUpdate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"is_active": False}, {"default_priority": 40}]},
    )

    is_active: bool | None = Field(None, description="False pauses the queue, true resumes it.")
    default_priority: int | None = Field(None, ge=PRIORITY_MIN, le=PRIORITY_MAX)


class QueueSettingsOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "sms-sending",
                    "default_priority": 80,
                    "is_active": True,
                    "created": "2026-11-28T08:00:00Z",
                }
            ]
        }
    )
    name: str
    default_priority: int
    is_active: bool
    created: datetime


class RedisHealth(BaseModel):
    status: Literal["healthy", "unhealthy"]
    ping: str | None = None
    memory_used: str | None = None
    connected_clients: int | None = None
    error: str | None = None


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
                    "queues": {"queue:email-sending:high": 0, "queue:email-sending": 12},
                    "workers": {"active_workers": 1, "worker_ids": ["host-1234-5f2a9c1b"]},
                    "jobs": {"queued": 12, "completed": 9000, "failed": 3},
                    "jobs_exact": True,
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
