"""The rows the stores return: plain, frozen domain objects, no driver types."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class JobRow:
    """A job as PostgreSQL holds it."""

    id: uuid.UUID
    queue_name: str
    status: str
    priority: int
    payload: dict[str, Any]
    attempt_count: int
    max_attempts: int
    run_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    failed_at: datetime | None
    last_error_message: str | None
    worker_id: str | None
    lease_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    snooze_count: int = 0
    cancel_requested_at: datetime | None = None
    concurrency_key: str | None = None


@dataclass(frozen=True, slots=True)
class NewJob:
    """What a producer supplies; `priority=None` takes the queue's default priority."""

    queue_name: str
    payload: dict[str, Any]
    priority: int | None = None
    run_at: datetime | None = None
    max_attempts: int = 3
    concurrency_key: str | None = None


@dataclass(frozen=True, slots=True)
class MovedJob:
    """A job the migrator moved: where it goes and the message pushed there."""

    id: uuid.UUID
    queue_name: str
    priority: int
    attempt_count: int
    created_at: datetime
    message: str


@dataclass(frozen=True, slots=True)
class Claim:
    """A won claim: the fence is (worker_id, attempt, token), token random per claim."""

    id: uuid.UUID
    attempt: int
    max_attempts: int
    started_at: datetime
    run_at: datetime | None = None  # when the job was due (for the wait-time metric)
    token: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class Success:
    job_id: uuid.UUID
    attempt: int
    started_at: datetime
    finished_at: datetime
    queue_name: str = ""  # for metrics only
    token: uuid.UUID | None = None  # the claim's fencing token


@dataclass(frozen=True, slots=True)
class Failure:
    job_id: uuid.UUID
    attempt: int
    started_at: datetime
    finished_at: datetime
    error: str
    retry_delay: float
    queue_name: str = ""  # for metrics only
    token: uuid.UUID | None = None  # the claim's fencing token


@dataclass(frozen=True, slots=True)
class FailureResult:
    job_id: uuid.UUID
    status: str  # "queued" (a retry is scheduled) or "failed" (attempts exhausted)
    run_at: datetime


def failure_results(rows: Iterable[Any]) -> list[FailureResult]:
    """The rows `id, status, run_at` that the outcome statements return."""
    return [FailureResult(job_id=r["id"], status=r["status"], run_at=r["run_at"]) for r in rows]


@dataclass(frozen=True, slots=True)
class RescuedJob:
    id: uuid.UUID
    status: str  # queued (the stall did not spend the attempt) or failed (a poison pill)
    attempt: int  # the attempt that stalled
    error: str
    stalls: int = 0


@dataclass(frozen=True, slots=True)
class ActionResult:
    """A won operator action: the job's new state."""

    id: uuid.UUID
    queue_name: str
    status: str
    attempt_count: int


@dataclass(frozen=True, slots=True)
class ActionRefused:
    """The action did not apply: no such job (status None), or it is in `status`."""

    status: str | None


@dataclass(frozen=True, slots=True)
class JobLogRow:
    id: uuid.UUID
    job_id: uuid.UUID
    status: str
    log_message: str | None
    attempt_number: int
    worker_id: str | None
    actor: str | None
    started_at: datetime
    finished_at: datetime | None
    duration_seconds: float | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class QueueRow:
    name: str
    default_priority: int
    is_active: bool
    created: datetime
    rate_limit: int | None = None
    rate_period: float = 1.0
    max_running: int | None = None
    max_running_per_key: int | None = None


@dataclass(frozen=True, slots=True)
class JobCounts:
    """Jobs by queue and status; `exact` False means the count timed out and
    `by_status` holds the planner's estimates (by_queue is then empty)."""

    by_queue: dict[str, dict[str, int]]
    by_status: dict[str, int]
    exact: bool


@dataclass(frozen=True, slots=True)
class PermanentFailed:
    """The handler said the job can never succeed (PermanentFailure): failed now."""

    job_id: uuid.UUID
    attempt: int
    started_at: datetime
    finished_at: datetime
    error: str
    queue_name: str = ""  # for metrics only
    token: uuid.UUID | None = None  # the claim's fencing token


@dataclass(frozen=True, slots=True)
class Snoozed:
    """The handler said "not now" (Snooze): queued again after `seconds`, the attempt
    not spent."""

    job_id: uuid.UUID
    attempt: int
    started_at: datetime
    finished_at: datetime
    seconds: float
    reason: str
    queue_name: str = ""  # for metrics only
    token: uuid.UUID | None = None  # the claim's fencing token


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """A periodic job's schedule, with the status of the last job it created."""

    name: str
    queue_name: str
    cron: str
    timezone: str
    payload: dict[str, Any]
    priority: int | None
    max_attempts: int
    enabled: bool
    source: str
    ticks_from: datetime
    last_tick: datetime | None
    last_job_id: uuid.UUID | None
    last_job_status: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class DueSchedule:
    """What the scheduler needs of an enabled schedule."""

    name: str
    cron: str
    timezone: str
    ticks_from: datetime
    last_tick: datetime | None


@dataclass(frozen=True, slots=True)
class CancelledRun:
    """A running job its worker stopped because a cancel was asked."""

    job_id: uuid.UUID
    attempt: int
    started_at: datetime
    finished_at: datetime
    queue_name: str = ""  # for metrics only
    token: uuid.UUID | None = None  # the claim's fencing token


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """A cancel recorded on a running job: its worker still has to stop it."""

    id: uuid.UUID
    queue_name: str
    status: str
    attempt_count: int
    worker_id: str | None
