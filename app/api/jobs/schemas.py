"""Bodies of the job routes, with the examples OpenAPI shows. The request models
(JobCreate, BatchJob) are the domain's: app.jobs.request."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.api.pagination import Page
from app.db.rows import JobLogRow, JobRow
from app.jobs.model import BATCH_MAX, JobStatus
from app.jobs.request import BatchJob


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
                    "snooze_count": 0,
                    "cancel_requested_at": None,
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
    snooze_count: int = Field(
        0,
        description="Times the handler snoozed the job (each sets run_at and gives the "
        "attempt back); past MAX_SNOOZES the job fails.",
    )
    cancel_requested_at: datetime | None = Field(
        None,
        description="When a cancel was asked while the job ran (its worker then stops it).",
    )
    redis_status: str = Field(description="Status in the job:<id> hash, or `not_in_redis`.")
    worker_id: str | None
    concurrency_key: str | None = None


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
    concurrency_key: str | None = None

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
            concurrency_key=row.concurrency_key,
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
        description="An attempt's outcome (completed, failed, snoozed, interrupted, or "
        "cancelled: stopped while running) or an operator's action (replayed, cancelled, "
        "discarded, cancel_requested)."
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

    # Items are validated one by one (app.jobs.validation) so that every bad item is
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
    status: JobStatus = Field(
        description="Status at creation: migrated_to_redis (due now, pushed to Redis at "
        "once: DIRECT_PUSH), queued (for the migrator), or scheduled (run_at later)."
    )
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
