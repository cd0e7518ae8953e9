"""Job routes: create a job, read its status."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Header, HTTPException, status
from fastapi.responses import JSONResponse

from app.api.creation import create_jobs
from app.api.deps import AdminDep, GroupCommitDep, RuntimeDep
from app.api.ops_schemas import KEY_MAX
from app.api.schemas import (
    CREATE_JOB_EXAMPLES,
    CREATE_JOB_RESPONSES,
    GET_JOB_RESPONSES,
    JobCreate,
    JobCreated,
    JobStatusOut,
)
from app.api.validation import validate_job

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=JobCreated,
    summary="Create a job",
    description=(
        "Stores the job in PostgreSQL (the answer comes after the commit); the migrator "
        "moves it to Redis when run_at is due, and a worker runs the queue's handler. A job "
        "for a paused queue is accepted and waits until the queue is resumed.\n\n"
        "With an `Idempotency-Key` header, the key is bound to the job for "
        "IDEMPOTENCY_KEY_TTL seconds: the same key with the same body answers the first "
        "answer again (200, same job, status as created), the same key with another body "
        "is a 409. A unique index in PostgreSQL holds the key, so concurrent identical "
        "requests make one job."
    ),
    response_description="The job is stored, queued.",
    responses=CREATE_JOB_RESPONSES,
)
async def create_job(
    body: Annotated[JobCreate, Body(openapi_examples=CREATE_JOB_EXAMPLES)],
    rt: RuntimeDep,
    admin: AdminDep,
    group: GroupCommitDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=KEY_MAX,
            description="Makes retries of this request safe: see above.",
        ),
    ] = None,
) -> JSONResponse:
    job = validate_job(body, max_payload_bytes=rt.settings.max_payload_bytes, model=JobCreate)
    (result,) = await create_jobs(
        rt,
        admin,
        [job],
        [idempotency_key],
        locs=[("body",)],
        key_fields=["Idempotency-Key"],
        group=group,
    )
    created = result.job
    assert created is not None
    answer = JobCreated(
        job_id=created.id,
        status="queued",
        queue_name=created.queue_name,
        priority=created.priority,
    )
    code = status.HTTP_201_CREATED if result.outcome == "created" else status.HTTP_200_OK
    return JSONResponse(answer.model_dump(mode="json"), status_code=code)


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
        redis_status=redis_status,
        worker_id=worker_id,
    )


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value
