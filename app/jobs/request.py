"""The request to create a job (POST /jobs, a batch item, JobClient.enqueue_many),
validated with pydantic; the row it becomes is app.jobs.model's."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    field_validator,
)

from app.jobs.model import KEY_MAX, MAX_ATTEMPTS_MAX, PRIORITY_MAX, PRIORITY_MIN, QUEUE_NAME_MAX

# An ISO 8601 time starts with its date, YYYY-MM-DD.
ISO_8601_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _fits_in_utc(value: datetime) -> datetime:
    # 9999-12-31T23:59:59-23:59 is a valid time whose UTC form is in year 10000: Python
    # (and the driver, which converts to UTC) cannot represent it.
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC (years 1 to 9999)") from None
    return value


# A time with a UTC offset that stays within Python's range once converted to UTC: every
# time a request carries (run_at, listing filters) is one.
UtcTime = Annotated[AwareDatetime, AfterValidator(_fits_in_utc)]


class JobCreate(BaseModel):
    """A job to run. Unknown fields are rejected, so a misspelt field is never ignored."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "queue_name": "email-sending",
                    "payload": {"campaign_id": "c-42", "lead_id": "l-7", "email_data": {}},
                    "priority": 75,
                    "run_at": "2026-11-28T09:00:00Z",
                    "max_attempts": 3,
                }
            ]
        },
    )

    queue_name: str = Field(
        min_length=1,
        max_length=QUEUE_NAME_MAX,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="An existing queue (see job_queues); no control characters.",
    )
    payload: dict[str, Any] = Field(
        description="A JSON object handed to the handler; at most MAX_PAYLOAD_BYTES as JSON."
    )
    # Strict: a boolean or a numeric string is refused, not read as a number (true is not 1).
    priority: StrictInt | None = Field(
        None,
        ge=PRIORITY_MIN,
        le=PRIORITY_MAX,
        description=(
            "Lower is more urgent: <= 50 high, <= 150 normal, else low. "
            "Omitted: the queue's default_priority (100 unless changed)."
        ),
    )
    run_at: UtcTime | None = Field(
        None,
        description="ISO 8601 time with a UTC offset; the job does not start before it. "
        "Omitted: now.",
    )
    max_attempts: StrictInt = Field(
        3, ge=1, le=MAX_ATTEMPTS_MAX, description="Attempts before failing."
    )
    concurrency_key: str | None = Field(
        None,
        min_length=1,
        max_length=KEY_MAX,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="Jobs of a queue with max_running_per_key and the same key run at most "
        "that many at once (e.g. the sending mailbox); ignored by queues without it.",
    )

    @field_validator("run_at", mode="before")
    @classmethod
    def _run_at_is_iso_8601(cls, value: object) -> object:
        # pydantic also reads a number, or a string of digits, as a Unix time: "20261128"
        # would schedule the job on 1970-08-23 instead of being refused.
        if value is not None and not (isinstance(value, str) and ISO_8601_DATE.match(value)):
            raise ValueError(
                "must be an ISO 8601 time with a UTC offset, e.g. 2026-11-28T09:00:00Z"
            )
        return value


class BatchJob(JobCreate):
    """A job of a batch: the fields of POST /jobs and an optional idempotency key."""

    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=KEY_MAX,
        description="Like the Idempotency-Key header of POST /jobs, for this item.",
    )
