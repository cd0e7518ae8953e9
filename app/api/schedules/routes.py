"""Periodic jobs (admin): list with the next run and the last job, create, change,
delete. The scheduler beside every migrator creates one job per tick."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, HTTPException, Path, status

from app.api.common import (
    UNAVAILABLE_EXAMPLES,
    MessageOut,
    ValidationErrorOut,
    documented,
    field_error,
)
from app.api.deps import RuntimeDep
from app.api.schedules.schemas import (
    LastJob,
    ScheduleCreate,
    ScheduleList,
    ScheduleOut,
    ScheduleUpdate,
)
from app.db.rows import ScheduleRow
from app.jobs.errors import FieldError, InputErrors, unknown_queue_error
from app.jobs.request import JobCreate
from app.jobs.schedule import SCHEDULE_NAME_MAX, Cron
from app.jobs.validation import seal, validate_job

router = APIRouter(prefix="/schedules", tags=["schedules"])

NameParam = Annotated[str, Path(max_length=SCHEDULE_NAME_MAX, description="The schedule's name.")]
BAD_NAME = documented(
    ValidationErrorOut,
    "The name is longer than any schedule's.",
    {
        "long": (
            "Too long",
            field_error(
                ["path", "name"], "String should have at most 100 characters", "string_too_long"
            ),
        )
    },
)

NOT_FOUND = documented(
    MessageOut,
    "No schedule has this name.",
    {"err": ("Example", {"detail": "schedule 'daily' not found"})},
)
UNAVAILABLE = documented(MessageOut, "PostgreSQL is unavailable.", UNAVAILABLE_EXAMPLES)
BAD_BODY = documented(
    ValidationErrorOut,
    "A bad field: an invalid cron expression, an unknown time zone or queue, …",
    {
        "cron": (
            "Invalid cron",
            field_error(
                ["body", "cron"], "Value error, invalid cron expression: Bad minute", "value_error"
            ),
        ),
        "timezone": (
            "Unknown time zone",
            field_error(
                ["body", "timezone"],
                "Value error, unknown time zone 'Mars/Olympus' (an IANA name, e.g. Europe/Berlin)",
                "value_error",
            ),
        ),
        "queue": (
            "Unknown queue",
            field_error(["body", "queue_name"], "unknown queue 'emails'", "unknown_queue"),
        ),
    },
)


def schedule_out(row: ScheduleRow, now: datetime) -> ScheduleOut:
    next_run = None
    if row.enabled:
        try:
            next_run = Cron(row.cron, row.timezone).next_after(max(now, row.ticks_from))
        except ValueError:
            next_run = None
    last_job = (
        LastJob(job_id=row.last_job_id, status=row.last_job_status)
        if row.last_job_id is not None
        else None
    )
    fields: dict[str, Any] = {
        "name": row.name,
        "queue_name": row.queue_name,
        "cron": row.cron,
        "timezone": row.timezone,
        "payload": row.payload,
        "priority": row.priority,
        "max_attempts": row.max_attempts,
        "enabled": row.enabled,
        "source": row.source,
        "next_run_at": next_run,
        "last_tick_at": row.last_tick,
        "last_job": last_job,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }
    return ScheduleOut(**fields)


async def _current(rt: RuntimeDep, name: str) -> ScheduleOut:
    row = await rt.schedules.get(name)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"schedule {name!r} not found")
    return schedule_out(row, datetime.now(UTC))


def _sealed_payload(rt: RuntimeDep, queue_name: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The payload as every job of the schedule will carry it, checked and sealed by the
    one validation of a job (size, JSON, the queue's payload model; its sensitive fields
    encrypted), so a bad payload is a 422 now, not a failed job at each tick."""
    try:
        job: JobCreate = validate_job(
            {"queue_name": queue_name, "payload": payload},
            max_payload_bytes=rt.settings.max_payload_bytes,
        )
        return seal(job, rt.registry, rt.cipher)
    except InputErrors as exc:
        raise InputErrors(422, exc.errors) from None


@router.get(
    "",
    response_model=ScheduleList,
    summary="List schedules",
    response_description="Every schedule with its next run and its last job.",
    description="Every periodic job by name: its cron expression and time zone, the next "
    "tick (UTC), the last tick run and the job it created (with that job's status).",
    responses={503: UNAVAILABLE},
)
async def list_schedules(rt: RuntimeDep) -> ScheduleList:
    now = datetime.now(UTC)
    return ScheduleList(items=[schedule_out(r, now) for r in await rt.schedules.all()])


@router.get(
    "/{name:path}",
    response_model=ScheduleOut,
    summary="Get a schedule",
    response_description="The schedule with its next run and its last job.",
    description="One schedule, as in the list.",
    responses={404: NOT_FOUND, 422: BAD_NAME, 503: UNAVAILABLE},
)
async def get_schedule(name: NameParam, rt: RuntimeDep) -> ScheduleOut:
    return await _current(rt, name)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ScheduleOut,
    summary="Create a schedule",
    response_description="The schedule as created.",
    description="From now on, each tick of `cron` (read in `timezone`) creates one job of "
    "`queue_name` with `payload`, however many migrators run. Past ticks never run.",
    responses={
        409: documented(
            MessageOut,
            "A schedule of this name exists.",
            {"err": ("Example", {"detail": "schedule 'daily-aggregate' exists"})},
        ),
        422: BAD_BODY,
        503: UNAVAILABLE,
    },
)
async def create_schedule(body: ScheduleCreate, rt: RuntimeDep) -> ScheduleOut:
    fields = body.model_dump()
    fields["payload"] = _sealed_payload(rt, body.queue_name, body.payload)
    try:
        created = await rt.schedules.create(**fields)
    except asyncpg.ForeignKeyViolationError:
        raise InputErrors(422, [unknown_queue_error(body.queue_name, ["body"])]) from None
    if not created:
        raise HTTPException(status.HTTP_409_CONFLICT, f"schedule {body.name!r} exists")
    return await _current(rt, body.name)


@router.patch(
    "/{name:path}",
    response_model=ScheduleOut,
    summary="Change, enable or disable a schedule",
    response_description="The schedule as it is now.",
    description="Only the fields given change. `enabled: false` stops its ticks; enabling "
    "it again, or a new `cron` or `timezone`, counts ticks from now (no past tick runs). "
    "A schedule declared in code gets its code's cron, time zone, queue and payload back "
    "at the next start of a process (`enabled` stays as set here).",
    responses={404: NOT_FOUND, 422: BAD_BODY, 503: UNAVAILABLE},
)
async def update_schedule(name: NameParam, body: ScheduleUpdate, rt: RuntimeDep) -> ScheduleOut:
    changes = {field: getattr(body, field) for field in body.model_fields_set}
    if not changes:
        raise FieldError(422, "enabled", "give at least one field to change", "missing")
    for field in ("queue_name", "cron", "timezone", "payload", "max_attempts", "enabled"):
        if field in changes and changes[field] is None:
            raise FieldError(422, field, "may not be null", "null")
    if "payload" in changes or "queue_name" in changes:
        current = await rt.schedules.get(name)
        if current is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"schedule {name!r} not found")
        if "payload" in changes:
            queue = changes.get("queue_name", current.queue_name)
            changes["payload"] = _sealed_payload(rt, queue, changes["payload"])
    try:
        updated = await rt.schedules.update(name, changes)
    except asyncpg.ForeignKeyViolationError:
        raise InputErrors(
            422, [unknown_queue_error(str(changes["queue_name"]), ["body"])]
        ) from None
    if not updated:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"schedule {name!r} not found")
    return await _current(rt, name)


@router.delete(
    "/{name:path}",
    response_model=ScheduleOut,
    summary="Delete a schedule",
    response_description="The schedule as it was; the jobs it created stay.",
    description="No further tick runs. A schedule declared in code comes back at the next "
    "start of a process: remove it from the code, or disable it instead.",
    responses={404: NOT_FOUND, 422: BAD_NAME, 503: UNAVAILABLE},
)
async def delete_schedule(name: NameParam, rt: RuntimeDep) -> ScheduleOut:
    before = await _current(rt, name)
    if not await rt.schedules.delete(name):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"schedule {name!r} not found")
    return before
