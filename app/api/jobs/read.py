"""Reading jobs: one job's status, the list of jobs, a job's timeline."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from app.api.common import (
    UNAVAILABLE_EXAMPLES,
    MessageOut,
    ValidationErrorOut,
    documented,
    field_error,
)
from app.api.deps import RuntimeDep
from app.api.jobs.examples import GET_JOB_RESPONSES
from app.api.jobs.schemas import JobLogOut, JobLogPage, JobOut, JobPage, JobStatusOut
from app.api.pagination import (
    LIMIT_DEFAULT,
    CursorQuery,
    LimitQuery,
    decode_time_id_cursor,
    page_of,
    time_id_cursor,
)
from app.jobs.model import QUEUE_NAME_MAX, JobStatus
from app.jobs.request import UtcTime

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get(
    "",
    response_model=JobPage,
    summary="List jobs",
    response_description="One page of jobs, newest first.",
    description="Jobs newest first, filtered by queue, status and creation time "
    "(`created_from` inclusive, `created_to` exclusive); page with `cursor`.",
    responses={
        422: documented(
            ValidationErrorOut,
            "A bad filter, limit or cursor.",
            {
                "err": (
                    "Example",
                    field_error(
                        ["query", "limit"],
                        "Input should be less than or equal to 500",
                        "less_than_equal",
                    ),
                )
            },
        ),
        503: documented(MessageOut, "PostgreSQL is unavailable.", UNAVAILABLE_EXAMPLES),
    },
)
async def list_jobs(
    rt: RuntimeDep,
    queue_name: Annotated[
        str | None, Query(max_length=QUEUE_NAME_MAX, description="Only this queue.")
    ] = None,
    status_: Annotated[
        JobStatus | None, Query(alias="status", description="Only this status.")
    ] = None,
    created_from: Annotated[
        UtcTime | None, Query(description="Created at or after this time.")
    ] = None,
    created_to: Annotated[UtcTime | None, Query(description="Created before this time.")] = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = LIMIT_DEFAULT,
) -> JobPage:
    rows = await rt.listings.list_jobs(
        queue_name=queue_name,
        status=status_,
        created_from=created_from,
        created_to=created_to,
        after=decode_time_id_cursor(cursor),
        limit=limit + 1,
    )
    items, last = page_of(rows, limit)
    next_cursor = time_id_cursor(last.created_at, last.id) if last is not None else None
    return JobPage(items=[JobOut.of(r) for r in items], next_cursor=next_cursor)


@router.get(
    "/{job_id}/logs",
    response_model=JobLogPage,
    summary="A job's timeline",
    response_description="One page of the job's timeline, oldest first.",
    description="Its job_logs rows, oldest first: one per attempt (status, message, worker, "
    "start, finish, duration; a snooze is one too) and one per operator action (replayed, "
    "cancelled, discarded, cancel_requested, with the actor and the reason).",
    responses={
        404: documented(
            MessageOut, "No job has this id.", {"err": ("Example", {"detail": "job not found"})}
        ),
        422: documented(
            ValidationErrorOut,
            "A bad id, limit or cursor.",
            {
                "err": (
                    "Example",
                    field_error(["query", "cursor"], "not a cursor of this list", "invalid_cursor"),
                )
            },
        ),
        503: documented(MessageOut, "PostgreSQL is unavailable.", UNAVAILABLE_EXAMPLES),
    },
)
async def job_logs(
    job_id: uuid.UUID,
    rt: RuntimeDep,
    cursor: CursorQuery = None,
    limit: LimitQuery = LIMIT_DEFAULT,
) -> JobLogPage:
    rows = await rt.listings.list_job_logs(
        job_id, after=decode_time_id_cursor(cursor), limit=limit + 1
    )
    if rows is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "job not found")
    items, last = page_of(rows, limit)
    next_cursor = time_id_cursor(last.created_at, last.id) if last is not None else None
    return JobLogPage(items=[JobLogOut.of(r) for r in items], next_cursor=next_cursor)


@router.get(
    "/{job_id}",
    response_model=JobStatusOut,
    summary="Get a job's status",
    description="PostgreSQL's record of the job, with the real-time state from Redis.",
    response_description="The job's state and its latest attempt.",
    responses=GET_JOB_RESPONSES,
)
async def get_job(job_id: uuid.UUID, rt: RuntimeDep) -> JobStatusOut:
    job = await rt.store.get_job(job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "job not found")
    try:
        cached = await rt.redis.hgetall(rt.keys.job(str(job_id)))
    except Exception:
        cached = {}  # Redis is a cache here: PostgreSQL's answer stands on its own.
    redis_status = _text(cached.get(b"status")) or "not_in_redis"
    worker_id = _text(cached.get(b"worker_id")) or job.worker_id
    return JobStatusOut(
        job_id=job.id,
        queue_name=job.queue_name,
        status=job.status,
        priority=job.priority,
        attempt_count=job.attempt_count,
        max_attempts=job.max_attempts,
        created_at=job.created_at,
        run_at=job.run_at,
        started_at=job.started_at,
        completed_at=job.completed_at,
        failed_at=job.failed_at,
        last_error_message=job.last_error_message,
        snooze_count=job.snooze_count,
        cancel_requested_at=job.cancel_requested_at,
        redis_status=redis_status,
        worker_id=worker_id,
        concurrency_key=job.concurrency_key,
    )


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value
