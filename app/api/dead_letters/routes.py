"""Dead letters: jobs whose attempts are exhausted (status `failed`). List them, replay
one or many (back to queued, attempts reset, history kept), or discard one."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query

from app.api.actions import ActionOut, ReasonQuery, apply_action, publish_changes
from app.api.common import (
    UNAVAILABLE_EXAMPLES,
    MessageOut,
    ValidationErrorOut,
    bad_job_id,
    documented,
    field_error,
)
from app.api.dead_letters.schemas import BulkReplayIn, BulkReplayOut
from app.api.deps import ActorDep, RuntimeDep
from app.api.jobs.schemas import JobOut, JobPage
from app.api.pagination import (
    LIMIT_DEFAULT,
    CursorQuery,
    LimitQuery,
    decode_time_id_cursor,
    page_of,
    time_id_cursor,
)
from app.jobs.model import QUEUE_NAME_MAX
from app.jobs.request import UtcTime

router = APIRouter(prefix="/dead-letter", tags=["dead letters"])

# Bulk replay works in transactions of this many jobs.
REPLAY_BATCH = 1000

_ERRORS_404_409: dict[int | str, dict[str, Any]] = {
    404: documented(
        MessageOut, "No job has this id.", {"err": ("Example", {"detail": "job not found"})}
    ),
    409: documented(
        MessageOut,
        "The job is not failed (the body says its status).",
        {
            "err": (
                "Example",
                {"detail": "job is completed: only a failed job can be replayed"},
            )
        },
    ),
    422: bad_job_id("The id is not a UUID, or reason is too long."),
    503: documented(
        MessageOut, "PostgreSQL is unavailable; nothing changed.", UNAVAILABLE_EXAMPLES
    ),
}


@router.get(
    "",
    response_model=JobPage,
    summary="List dead letters",
    response_description="One page of failed jobs, newest first.",
    description="Failed jobs (attempts exhausted), newest failure first. Filter by queue and "
    "by failure time; page with `cursor`.",
    responses={
        422: documented(
            ValidationErrorOut,
            "A bad filter, limit or cursor.",
            {
                "err": (
                    "Example",
                    field_error(
                        ["query", "failed_since"],
                        "Input should have timezone info",
                        "timezone_aware",
                    ),
                )
            },
        ),
        503: documented(MessageOut, "PostgreSQL is unavailable.", UNAVAILABLE_EXAMPLES),
    },
)
async def list_dead_letters(
    rt: RuntimeDep,
    queue_name: Annotated[
        str | None, Query(max_length=QUEUE_NAME_MAX, description="Only this queue.")
    ] = None,
    failed_since: Annotated[
        UtcTime | None, Query(description="Only jobs that failed at or after this time.")
    ] = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = LIMIT_DEFAULT,
) -> JobPage:
    rows = await rt.listings.list_dead_letters(
        queue_name=queue_name,
        failed_since=failed_since,
        after=decode_time_id_cursor(cursor),
        limit=limit + 1,
    )
    items, last = page_of(rows, limit)
    next_cursor = None
    if last is not None:
        assert last.failed_at is not None
        next_cursor = time_id_cursor(last.failed_at, last.id)
    return JobPage(items=[JobOut.of(r) for r in items], next_cursor=next_cursor)


@router.post(
    "/replay",
    response_model=BulkReplayOut,
    summary="Replay the dead letters of a queue",
    response_description="How many jobs went back to queued.",
    description="Every job of the queue that is failed (and failed since `failed_since`, if "
    "given) goes back to queued with its attempts reset and its error cleared; its history "
    "stays in its logs, with a `replayed` row naming who and why. Jobs failing while this "
    "runs are left alone. Works in transactions of 1,000 jobs.",
    responses={
        422: documented(
            ValidationErrorOut,
            "A field is invalid.",
            {"err": ("Example", field_error(["query", "queue"], "Field required", "missing"))},
        ),
        503: documented(MessageOut, "PostgreSQL is unavailable.", UNAVAILABLE_EXAMPLES),
    },
)
async def replay_dead_letters(body: BulkReplayIn, rt: RuntimeDep, actor: ActorDep) -> BulkReplayOut:
    until = await rt.retention.database_now()
    total = 0
    while True:
        replayed = await rt.actions.replay_dead_letters_batch(
            body.queue_name,
            body.failed_since,
            until,
            REPLAY_BATCH,
            reason=body.reason or "replayed from the dead letters (bulk)",
            actor=actor,
        )
        await publish_changes(rt, replayed, "replayed")
        total += len(replayed)
        if len(replayed) < REPLAY_BATCH:
            return BulkReplayOut(replayed=total)


@router.post(
    "/{job_id}/replay",
    response_model=ActionOut,
    summary="Replay one dead letter",
    response_description="The job, queued again.",
    description="This job, and no other, goes from failed back to queued: attempt_count 0, "
    "last_error_message and failed_at cleared, run_at now. Its logs keep every earlier "
    "attempt and gain a `replayed` row with the actor and reason.",
    responses=_ERRORS_404_409,
)
async def replay_job(
    job_id: uuid.UUID, rt: RuntimeDep, actor: ActorDep, reason: ReasonQuery = None
) -> ActionOut:
    return await apply_action(rt, "replay", job_id, reason=reason, actor=actor)


@router.delete(
    "/{job_id}",
    response_model=ActionOut,
    summary="Discard one dead letter",
    response_description="The job, now discarded.",
    description="The failed job becomes `discarded`: it is kept (with its logs) for the "
    "record, never runs again, and is deleted by retention after RETENTION_FAILED seconds "
    "like a failed job.",
    responses=_ERRORS_404_409,
)
async def discard_job(
    job_id: uuid.UUID, rt: RuntimeDep, actor: ActorDep, reason: ReasonQuery = None
) -> ActionOut:
    return await apply_action(rt, "discard", job_id, reason=reason, actor=actor)
