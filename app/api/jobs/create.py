"""Creating jobs: POST /jobs (one job, through the group commit) and POST /jobs/batch
(up to BATCH_MAX in one transaction, all or nothing)."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import APIRouter, Body, Header, status
from fastapi.responses import JSONResponse

from app.api.common import (
    UNAVAILABLE_EXAMPLES,
    MessageOut,
    ValidationErrorOut,
    documented,
    field_error,
)
from app.api.deps import CreatedCounterDep, GroupCommitDep, RuntimeDep
from app.api.jobs.creation import create_jobs
from app.api.jobs.examples import CREATE_JOB_EXAMPLES, CREATE_JOB_RESPONSES
from app.api.jobs.schemas import BatchItemOut, JobBatchIn, JobBatchOut, JobCreated
from app.jobs.model import KEY_MAX, JobStatus
from app.jobs.request import BatchJob, JobCreate
from app.jobs.validation import prepare_jobs, seal, to_insert, validate_job

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
    row = to_insert(job, idempotency_key, seal(job, rt.registry, rt.cipher))
    (result,) = await create_jobs(
        rt,
        [job],
        [row],
        locs=[("body",)],
        key_fields=["Idempotency-Key"],
        group=group,
    )
    created = result.job
    assert created is not None
    answer = JobCreated(
        job_id=created.id,
        status=cast(JobStatus, created.status),  # queued, or scheduled if run_at is later
        queue_name=created.queue_name,
        priority=created.priority,
    )
    code = status.HTTP_201_CREATED if result.outcome == "created" else status.HTTP_200_OK
    return JSONResponse(answer.model_dump(mode="json"), status_code=code)


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
async def create_batch(
    body: JobBatchIn, rt: RuntimeDep, counter: CreatedCounterDep
) -> JSONResponse:
    jobs, rows = prepare_jobs(
        body.jobs,
        model=BatchJob,
        max_payload_bytes=rt.settings.max_payload_bytes,
        registry=rt.registry,
        cipher=rt.cipher,
        loc=("body", "jobs"),
    )
    results = await create_jobs(
        rt,
        jobs,
        rows,
        locs=[("body", "jobs", i) for i in range(len(jobs))],
        key_fields=["idempotency_key"] * len(jobs),
        counter=counter,
    )
    items = []
    for index, result in enumerate(results):
        assert result.job is not None
        items.append(
            BatchItemOut(
                index=index,
                job_id=result.job.id,
                status=cast(JobStatus, result.job.status),
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
