"""Bodies of the schedule routes, with the examples OpenAPI shows."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.jobs.model import MAX_ATTEMPTS_MAX, PRIORITY_MAX, PRIORITY_MIN, JobStatus
from app.jobs.schedule import SCHEDULE_NAME_MAX, check_cron, check_timezone
from app.registry import validate_queue_name

_CREATE_EXAMPLE: dict[str, Any] = {
    "name": "daily-aggregate",
    "queue_name": "analytics:daily-aggregate",
    "cron": "0 2 * * *",
    "timezone": "Europe/Berlin",
    "payload": {"scope": "all-campaigns"},
    "priority": 150,
    "max_attempts": 3,
    "enabled": True,
}

CRON_DESCRIPTION = (
    "A cron expression: 5 fields (minute hour day-of-month month day-of-week), or 6 with "
    "seconds first; read in `timezone` with Debian cron's rules (a time skipped by a DST "
    "change runs once just after it, a repeated one runs once)."
)


def _check_name(value: str) -> str:
    if any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError("a schedule name has no whitespace or control characters")
    return value


def _check_queue(value: str) -> str:
    validate_queue_name(value)
    return value


class ScheduleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_CREATE_EXAMPLE]})

    name: str = Field(min_length=1, max_length=SCHEDULE_NAME_MAX, description="Unique name.")
    queue_name: str = Field(description="An existing queue: each tick creates a job of it.")
    cron: str = Field(description=CRON_DESCRIPTION)
    timezone: str = Field("UTC", description="IANA time zone the cron is read in.")
    payload: dict[str, Any] = Field(default_factory=dict, description="Payload of each job.")
    priority: int | None = Field(
        None, ge=PRIORITY_MIN, le=PRIORITY_MAX, description="Null: the queue's default."
    )
    max_attempts: int = Field(3, ge=1, le=MAX_ATTEMPTS_MAX)
    enabled: bool = True

    _name = field_validator("name")(_check_name)
    _queue = field_validator("queue_name")(_check_queue)
    _cron = field_validator("cron")(check_cron)
    _timezone = field_validator("timezone")(check_timezone)


class ScheduleUpdate(BaseModel):
    """Only the fields given change."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"enabled": False}, {"cron": "30 3 * * *", "timezone": "Europe/Paris"}]
        },
    )

    queue_name: str | None = None
    cron: str | None = Field(None, description=CRON_DESCRIPTION)
    timezone: str | None = None
    payload: dict[str, Any] | None = None
    priority: int | None = Field(
        None, ge=PRIORITY_MIN, le=PRIORITY_MAX, description="Null: the queue's default."
    )
    max_attempts: int | None = Field(None, ge=1, le=MAX_ATTEMPTS_MAX)
    enabled: bool | None = Field(None, description="False: no tick runs until enabled again.")

    @field_validator("queue_name")
    @classmethod
    def _queue(cls, value: str | None) -> str | None:
        return None if value is None else _check_queue(value)

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else check_cron(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        return None if value is None else check_timezone(value)


class LastJob(BaseModel):
    job_id: uuid.UUID
    status: JobStatus | None = Field(description="Null once retention deleted the job.")


class ScheduleOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    **_CREATE_EXAMPLE,
                    "source": "api",
                    "next_run_at": "2026-12-01T01:00:00Z",
                    "last_tick_at": "2026-11-30T01:00:00Z",
                    "last_job": {
                        "job_id": "0b9d6f7e-3f7c-4a36-9a51-2f7f1b0e9c11",
                        "status": "completed",
                    },
                    "created_at": "2026-11-28T08:00:00Z",
                    "updated_at": "2026-11-30T01:00:00.004000Z",
                }
            ]
        }
    )

    name: str
    queue_name: str
    cron: str
    timezone: str
    payload: dict[str, Any]
    priority: int | None
    max_attempts: int
    enabled: bool
    source: str = Field(description="`code` (declared with a handler) or `api`.")
    next_run_at: datetime | None = Field(description="The next tick (UTC); null if disabled.")
    last_tick_at: datetime | None = Field(description="The last tick run (or skipped).")
    last_job: LastJob | None = Field(description="The job the last run tick created.")
    created_at: datetime
    updated_at: datetime


class ScheduleList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"items": ScheduleOut.model_config["json_schema_extra"]["examples"]}]  # type: ignore[index]
        }
    )

    items: list[ScheduleOut] = Field(description="Every schedule, by name (not paginated).")
