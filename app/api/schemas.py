"""Request and response bodies of the HTTP API, with the examples OpenAPI shows."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

PRIORITY_MIN = 0
PRIORITY_MAX = 1000
MAX_ATTEMPTS_MAX = 100

JobStatus = Literal[
    "queued", "migrated_to_redis", "running", "completed", "failed", "cancelled", "discarded"
]


class JobCreate(BaseModel):
    """A job to run. Unknown fields are rejected, so a misspelt field is never ignored."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "queue_name": "email-sending",
                    "payload": {"campaign_id": "c-42", "lead_id": "l-7", "email_data": {}},
                    "priority": 75,
                    "run_at": "2026-11-28T09:00:00Z",
                    "max_attempts": 3,
                }
            ]
        },
    )

    queue_name: str = Field(
        min_length=1, max_length=100, description="An existing queue (see job_queues)."
    )
    payload: dict[str, Any] = Field(
        description="A JSON object handed to the handler; at most MAX_PAYLOAD_BYTES as JSON."
    )
    priority: int | None = Field(
        None,
        ge=PRIORITY_MIN,
        le=PRIORITY_MAX,
        description=(
            "Lower is more urgent: <= 50 high, <= 150 normal, else low. "
            "Omitted: the queue's default_priority (100 unless changed)."
        ),
    )
    run_at: AwareDatetime | None = Field(
        None,
        description="ISO 8601 time with a UTC offset; the job does not start before it. "
        "Omitted: now.",
    )
    max_attempts: int = Field(3, ge=1, le=MAX_ATTEMPTS_MAX, description="Attempts before failing.")


class JobCreated(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "job_id": "0b9d6f7e-3f7c-4a36-9a51-2f7f1b0e9c11",
                    "status": "queued",
                    "queue_name": "email-sending",
                    "priority": 75,
                }
            ]
        }
    )

    job_id: uuid.UUID
    status: JobStatus
    queue_name: str
    priority: int


class JobStatusOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "job_id": "0b9d6f7e-3f7c-4a36-9a51-2f7f1b0e9c11",
                    "queue_name": "email-sending",
                    "status": "completed",
                    "priority": 75,
                    "attempt_count": 1,
                    "max_attempts": 3,
                    "created_at": "2026-11-28T09:00:00.120000Z",
                    "run_at": "2026-11-28T09:00:00.120000Z",
                    "started_at": "2026-11-28T09:00:00.124000Z",
                    "completed_at": "2026-11-28T09:00:00.131000Z",
                    "failed_at": None,
                    "last_error_message": None,
                    "redis_status": "completed",
                    "worker_id": "host-1234-5f2a9c1b",
                }
            ]
        }
    )

    job_id: uuid.UUID
    queue_name: str
    status: JobStatus
    priority: int
    attempt_count: int
    max_attempts: int
    created_at: datetime
    run_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    failed_at: datetime | None
    last_error_message: str | None
    redis_status: str = Field(description="Status in the job:<id> hash, or `not_in_redis`.")
    worker_id: str | None


class ErrorItem(BaseModel):
    loc: list[str | int] = Field(description='Where the problem is, e.g. ["body", "priority"].')
    msg: str
    type: str


class ValidationErrorOut(BaseModel):
    """Every 4xx about input: which field, and what is wrong with it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "detail": [
                        {
                            "loc": ["body", "queue_name"],
                            "msg": "unknown queue 'emails'",
                            "type": "unknown_queue",
                        }
                    ]
                }
            ]
        }
    )
    detail: list[ErrorItem]


class MessageOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"detail": "job not found"}]})
    detail: str


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
