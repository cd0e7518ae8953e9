"""Jobs for operators: list them, read a job's timeline, cancel one, create a batch."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime

from app.api.actions import ReasonQuery, apply_action
from app.api.auth import require
from app.api.creation import create_jobs
from app.api.deps import ActorDep, AdminDep, RuntimeDep
from app.api.errors import InputErrors
from app.api.ops_schemas import (
    ActionOut,
    BatchItemOut,
    BatchJob,
    JobBatchIn,
    JobBatchOut,
    JobLogOut,
    JobLogPage,
    JobOut,
    JobPage,
)
from app.api.pagination import (
    LIMIT_DEFAULT,
    CursorQuery,
    LimitQuery,
    decode_time_id_cursor,
    page_of,
    time_id_cursor,
)
from app.api.schemas import (
    UNAVAILABLE_EXAMPLES,
    JobStatus,
    MessageOut,
    ValidationErrorOut,
    bad_job_id,
    documented,
    field_error,
)
from app.api.validation import validate_job

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
    admin: AdminDep,
    queue_name: Annotated[str | None, Query(max_length=100, description="Only this queue.")] = None,
    status_: Annotated[
        JobStatus | None, Query(alias="status", description="Only this status.")
    ] = None,
    created_from: Annotated[
        AwareDatetime | None, Query(description="Created at or after this time.")
    ] = None,
    created_to: Annotated[
        AwareDatetime | None, Query(description="Created before this time.")
    ] = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = LIMIT_DEFAULT,
) -> JobPage:
    rows = await admin.list_jobs(
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
    "start, finish, duration) and one per operator action (replayed, cancelled, discarded, "
    "with the actor and the reason).",
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
    admin: AdminDep,
    cursor: CursorQuery = None,
    limit: LimitQuery = LIMIT_DEFAULT,
) -> JobLogPage:
    rows = await admin.list_job_logs(job_id, after=decode_time_id_cursor(cursor), limit=limit + 1)
    if rows is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "job not found")
    items, last = page_of(rows, limit)
    next_cursor = time_id_cursor(last.created_at, last.id) if last is not None else None
    return JobLogPage(items=[JobLogOut.of(r) for r in items], next_cursor=next_cursor)


@router.post(
    "/{job_id}/cancel",
    response_model=ActionOut,
    dependencies=[require("admin")],
    summary="Cancel a job",
    response_description="The job, now cancelled.",
    description="A queued or migrated_to_redis job becomes cancelled and never runs: a copy "
    "already in Redis is dropped by the worker that pops it (its claim needs "
    "migrated_to_redis). A running or finished job cannot be cancelled (409). Against a "
    "worker's claim exactly one wins.",
    responses={
        404: documented(
            MessageOut, "No job has this id.", {"err": ("Example", {"detail": "job not found"})}
        ),
        409: documented(
            MessageOut,
            "The job is running or finished.",
            {
                "err": (
                    "Example",
                    {
                        "detail": "job is running: only a queued or migrated_to_redis job can be "
                        "cancelled"
                    },
                )
            },
        ),
        422: bad_job_id("The id is not a UUID."),
        503: documented(
            MessageOut, "PostgreSQL is unavailable; nothing changed.", UNAVAILABLE_EXAMPLES
        ),
    },
)
async def cancel_job(
    job_id: uuid.UUID, rt: RuntimeDep, admin: AdminDep, actor: ActorDep, reason: ReasonQuery = None
) -> ActionOut:
    return await apply_action(rt, admin, "cancel", job_id, reason=reason, actor=actor)


@router.post(
    "/batch",
    status_code=status.HTTP_201_CREATED,
    response_model=JobBatchOut,
    summary="Create up to 1,000 jobs at once",
    response_description="Every job, in the order sent (created: true for new ones).",
    description="All in one transaction: if any item is invalid nothing is written, and the "
    'answer lists every bad item (`loc`: ["body", "jobs", index, field]) with the '
    "reason. Each item may carry an `idempotency_key` (see POST /jobs): an item whose key "
    "already made the same job answers that job with `created: false`. 201 if a job was "
    "created, 200 if every item found an existing one.",
    responses={
        200: {"model": JobBatchOut, "description": "Every item's key found its existing job."},
        409: documented(
            ValidationErrorOut,
            "Every bad item reuses an idempotency key with a different request.",
            {
                "err": (
                    "Example",
                    field_error(
                        ["body", "jobs", 3, "idempotency_key"],
                        "this idempotency key was used with a different request",
                        "idempotency_key_reused",
                    ),
                )
            },
        ),
        413: documented(
            ValidationErrorOut,
            "Only payloads over the size limit.",
            {
                "err": (
                    "Example",
                    field_error(
                        ["body", "jobs", 0, "payload"],
                        "payload is 300000 bytes; the limit is 262144",
                        "too_large",
                    ),
                )
            },
        ),
        422: documented(
            ValidationErrorOut,
            "Bad items, each named by index.",
            {
                "err": (
                    "Example",
                    field_error(
                        ["body", "jobs", 2, "queue_name"], "unknown queue 'emails'", "unknown_queue"
                    ),
                )
            },
        ),
        503: documented(
            MessageOut, "PostgreSQL is unavailable; nothing written.", UNAVAILABLE_EXAMPLES
        ),
    },
)
async def create_batch(body: JobBatchIn, rt: RuntimeDep, admin: AdminDep) -> JSONResponse:
    limit = rt.settings.max_payload_bytes
    jobs: list[BatchJob] = []
    errors: list[dict[str, Any]] = []
    too_large_only = True
    for index, item in enumerate(body.jobs):
        try:
            jobs.append(
                validate_job(
                    item, max_payload_bytes=limit, model=BatchJob, loc=("body", "jobs", index)
                )
            )
        except InputErrors as exc:
            errors.extend(exc.errors)
            too_large_only &= exc.status_code == 413
    if errors:
        raise InputErrors(413 if too_large_only else 422, errors)
    results = await create_jobs(
        rt,
        admin,
        jobs,
        [j.idempotency_key for j in jobs],
        locs=[("body", "jobs", i) for i in range(len(jobs))],
        key_fields=["idempotency_key"] * len(jobs),
    )
    items = []
    for index, result in enumerate(results):
        assert result.job is not None
        items.append(
            BatchItemOut(
                index=index,
                job_id=result.job.id,
                status="queued",
                queue_name=result.job.queue_name,
                priority=result.job.priority,
                created=result.outcome == "created",
            )
        )
    any_created = any(i.created for i in items)
    return JSONResponse(
        JobBatchOut(jobs=items).model_dump(mode="json"),
        status_code=status.HTTP_201_CREATED if any_created else status.HTTP_200_OK,
    )
