"""Queues: their settings, counts by status, Redis depths and the age of the oldest due
job; create a queue; pause or resume one and set its default priority."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, status

from app.api.common import (
    UNAVAILABLE_EXAMPLES,
    MessageOut,
    ValidationErrorOut,
    documented,
    field_error,
)
from app.api.deps import RuntimeDep
from app.api.pagination import (
    LIMIT_DEFAULT,
    CursorQuery,
    LimitQuery,
    decode_name_cursor,
    name_cursor,
    page_of,
)
from app.api.queues.schemas import (
    QueueCreate,
    QueueOut,
    QueuePage,
    QueueSettingsOut,
    QueueUpdate,
    RedisDepths,
)
from app.db.queues import LIMIT_FIELDS, QueueLimitSettings
from app.db.rows import QueueRow
from app.jobs.errors import FieldError
from app.observe import redis_depths

router = APIRouter(prefix="/queues", tags=["queues"])


@router.get(
    "",
    response_model=QueuePage,
    summary="List queues",
    response_description="One page of queues with their counts and Redis depths.",
    description="Every queue (by name; page with `cursor`) with its default_priority and "
    "is_active, its jobs by status in PostgreSQL (exact as of `counted_at`, at most "
    "STATS_MAX_AGE seconds ago, or null when counting takes longer than STATS_TIMEOUT), "
    "the depth of its three Redis lists and the age of its oldest due "
    "job not yet started.",
    responses={
        422: documented(
            ValidationErrorOut,
            "A bad limit or cursor.",
            {
                "err": (
                    "Example",
                    field_error(
                        ["query", "limit"],
                        "Input should be greater than or equal to 1",
                        "greater_than_equal",
                    ),
                )
            },
        ),
        503: documented(MessageOut, "PostgreSQL or Redis is unavailable.", UNAVAILABLE_EXAMPLES),
    },
)
async def list_queues(
    rt: RuntimeDep, cursor: CursorQuery = None, limit: LimitQuery = LIMIT_DEFAULT
) -> QueuePage:
    rows = await rt.queues.list_queues(after=decode_name_cursor(cursor), limit=limit + 1)
    queues, last = page_of(rows, limit)
    names = [q.name for q in queues]
    snapshot = await rt.counts.get()
    counts = snapshot.counts
    ages = await rt.listings.oldest_due_ages(names)
    depths = await redis_depths(rt.redis, rt.keys, names)
    items = [
        QueueOut(
            name=q.name,
            default_priority=q.default_priority,
            is_active=q.is_active,
            created=q.created,
            **_limits(q),
            counts=counts.by_queue.get(q.name, {}) if counts.exact else None,
            counts_exact=counts.exact,
            counted_at=snapshot.counted_at,
            redis_depth=RedisDepths(**depths[q.name]),
            oldest_due_age_seconds=ages.get(q.name),
        )
        for q in queues
    ]
    return QueuePage(items=items, next_cursor=name_cursor(last.name) if last else None)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=QueueSettingsOut,
    summary="Create a queue",
    response_description="The queue as created.",
    description="A queue that jobs may name. Workers run its jobs once a handler is "
    "registered for it (HANDLER_MODULES). Optional limits: `rate_limit` jobs started per "
    "`rate_period` seconds, `max_running` at once, `max_running_per_key` at once per "
    "`concurrency_key`; each across every worker process.",
    responses={
        409: documented(
            MessageOut,
            "A queue of this name exists.",
            {"err": ("Example", {"detail": "queue 'email-sending' exists"})},
        ),
        422: documented(
            ValidationErrorOut,
            "A bad name or default_priority.",
            {
                "err": (
                    "Example",
                    field_error(
                        ["body", "default_priority"],
                        "Input should be less than or equal to 1000",
                        "less_than_equal",
                    ),
                )
            },
        ),
        503: documented(MessageOut, "PostgreSQL is unavailable.", UNAVAILABLE_EXAMPLES),
    },
)
async def create_queue(body: QueueCreate, rt: RuntimeDep) -> QueueSettingsOut:
    limits = QueueLimitSettings(
        rate_limit=body.rate_limit,
        rate_period=body.rate_period,
        max_running=body.max_running,
        max_running_per_key=body.max_running_per_key,
    )
    row = await rt.queues.create_queue(body.name, body.default_priority, body.is_active, limits)
    if row is None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"queue {body.name!r} exists")
    return _settings(row)


@router.patch(
    "/{name:path}",
    response_model=QueueSettingsOut,
    summary="Pause, resume, re-prioritise or limit a queue",
    response_description="The queue as it is now.",
    description="`is_active: false` pauses the queue: it keeps accepting jobs, but the "
    "migrator moves none of them to Redis (jobs already in Redis still run). `true` "
    "resumes it. `default_priority` applies to jobs created afterwards without a priority. "
    "`rate_limit` (starts per `rate_period` seconds), `max_running` and "
    "`max_running_per_key` (jobs with the same `concurrency_key`) limit the queue across "
    "every worker from the migrator's next pass; null clears a limit, a field left out "
    "keeps it.",
    responses={
        404: documented(
            MessageOut,
            "No queue has this name.",
            {"err": ("Example", {"detail": "queue 'emails' not found"})},
        ),
        422: documented(
            ValidationErrorOut,
            "A bad or empty body.",
            {
                "err": (
                    "Example",
                    field_error(["body"], "give is_active or default_priority", "empty_update"),
                )
            },
        ),
        503: documented(MessageOut, "PostgreSQL is unavailable.", UNAVAILABLE_EXAMPLES),
    },
)
async def update_queue(name: str, body: QueueUpdate, rt: RuntimeDep) -> QueueSettingsOut:
    if not body.model_fields_set:
        raise FieldError(
            422, "is_active", "give is_active, default_priority or a limit to change", "missing"
        )
    if "rate_period" in body.model_fields_set and body.rate_period is None:
        raise FieldError(422, "rate_period", "must be a number of seconds, not null", "float_type")
    limits = QueueLimitSettings(
        rate_limit=body.rate_limit,
        rate_period=body.rate_period,
        max_running=body.max_running,
        max_running_per_key=body.max_running_per_key,
        given=frozenset(body.model_fields_set & set(LIMIT_FIELDS)),
    )
    row = await rt.queues.update_queue(name, body.default_priority, body.is_active, limits)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"queue {name!r} not found")
    return _settings(row)


def _settings(row: QueueRow) -> QueueSettingsOut:
    fields: dict[str, Any] = {
        "name": row.name,
        "default_priority": row.default_priority,
        "is_active": row.is_active,
        "created": row.created,
        **_limits(row),
    }
    return QueueSettingsOut(**fields)


def _limits(row: QueueRow) -> dict[str, Any]:
    return {
        "rate_limit": row.rate_limit,
        "rate_period": row.rate_period,
        "max_running": row.max_running,
        "max_running_per_key": row.max_running_per_key,
    }
