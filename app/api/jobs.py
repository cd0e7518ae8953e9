"""Job routes: create a job, read its status."""

from __future__ import annotations

import uuid
from typing import Annotated

import orjson
from fastapi import APIRouter, Body, HTTPException, status

from app.api.deps import RuntimeDep
from app.api.errors import FieldError, PayloadErrors
from app.api.schemas import (
    CREATE_JOB_EXAMPLES,
    CREATE_JOB_RESPONSES,
    GET_JOB_RESPONSES,
    JobCreate,
    JobCreated,
    JobStatusOut,
)
from app.db.store import NewJob
from app.payloads import PayloadRejected, seal_payload

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=JobCreated,
    summary="Create a job",
    description=(
        "Stores the job in PostgreSQL (the answer comes after the commit); the migrator "
        "moves it to Redis when run_at is due, and a worker runs the queue's handler. A job "
        "for a paused queue is accepted and waits until the queue is resumed."
    ),
    response_description="The job is stored, queued.",
    responses=CREATE_JOB_RESPONSES,
)
async def create_job(
    body: Annotated[JobCreate, Body(openapi_examples=CREATE_JOB_EXAMPLES)], rt: RuntimeDep
) -> JobCreated:
    size = len(orjson.dumps(body.payload))
    limit = rt.settings.max_payload_bytes
    if size > limit:
        raise FieldError(
            413, "payload", f"payload is {size} bytes; the limit is {limit}", "too_large"
        )
    try:
        payload = seal_payload(rt.registry, rt.cipher, body.queue_name, body.payload)
    except PayloadRejected as exc:
        raise PayloadErrors(exc.errors) from None
    created = await rt.store.create_job(
        NewJob(
            queue_name=body.queue_name,
            payload=payload,
            priority=body.priority,
            run_at=body.run_at,
            max_attempts=body.max_attempts,
        )
    )
    if created is None:
        raise FieldError(422, "queue_name", f"unknown queue {body.queue_name!r}", "unknown_queue")
    return JobCreated(
        job_id=created.id,
        status=created.status,
        queue_name=created.queue_name,
        priority=created.priority,
    )


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
