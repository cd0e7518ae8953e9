"""Request and response bodies of the HTTP API, with the examples OpenAPI shows."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any, Literal

from fastapi.openapi.models import Example
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

# An ISO 8601 time starts with its date, YYYY-MM-DD.
ISO_8601_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

PRIORITY_MIN = 0
PRIORITY_MAX = 1000
MAX_ATTEMPTS_MAX = 100

JobStatus = Literal[
    "queued", "migrated_to_redis", "running", "completed", "failed", "cancelled", "discarded"
]


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
        max_length=100,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="An existing queue (see job_queues); no control characters.",
    )
    payload: dict[str, Any] = Field(
        description="A JSON object handed to the handler; at most MAX_PAYLOAD_BYTES as JSON."
    )
    priority: int | None = Field(
        None,
        ge=PRIORITY_MIN,
        le=PRIORITY_MAX,
        description=(
            "Lower is more urgent: <= 50 high, <= 150 normal, else low. "
            "Omitted: the queue's default_priority (100 unless changed)."
        ),
    )
    run_at: AwareDatetime | None = Field(
        None,
        description="ISO 8601 time with a UTC offset; the job does not start before it. "
        "Omitted: now.",
    )
    max_attempts: int = Field(3, ge=1, le=MAX_ATTEMPTS_MAX, description="Attempts before failing.")

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


class JobCreated(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "job_id": "0b9d6f7e-3f7c-4a36-9a51-2f7f1b0e9c11",
                    "status": "queued",
                    "queue_name": "email-sending",
                    "priority": 75,
                }
            ]
        }
    )

    job_id: uuid.UUID
    status: JobStatus
    queue_name: str
    priority: int


class JobStatusOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "job_id": "0b9d6f7e-3f7c-4a36-9a51-2f7f1b0e9c11",
                    "queue_name": "email-sending",
                    "status": "completed",
                    "priority": 75,
                    "attempt_count": 1,
                    "max_attempts": 3,
                    "created_at": "2026-11-28T09:00:00.120000Z",
                    "run_at": "2026-11-28T09:00:00.120000Z",
                    "started_at": "2026-11-28T09:00:00.124000Z",
                    "completed_at": "2026-11-28T09:00:00.131000Z",
                    "failed_at": None,
                    "last_error_message": None,
                    "redis_status": "completed",
                    "worker_id": "host-1234-5f2a9c1b",
                }
            ]
        }
    )

    job_id: uuid.UUID
    queue_name: str
    status: JobStatus
    priority: int
    attempt_count: int
    max_attempts: int
    created_at: datetime
    run_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    failed_at: datetime | None
    last_error_message: str | None
    redis_status: str = Field(description="Status in the job:<id> hash, or `not_in_redis`.")
    worker_id: str | None


class ErrorItem(BaseModel):
    loc: list[str | int] = Field(description='Where the problem is, e.g. ["body", "priority"].')
    msg: str
    type: str


class ValidationErrorOut(BaseModel):
    """Every 4xx about input: which field, and what is wrong with it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "detail": [
                        {
                            "loc": ["body", "queue_name"],
                            "msg": "unknown queue 'emails'",
                            "type": "unknown_queue",
                        }
                    ]
                }
            ]
        }
    )
    detail: list[ErrorItem]


class MessageOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"detail": "job not found"}]})
    detail: str


class HealthOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})
    status: Literal["ok"]


class ReadyOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"status": "ok", "checks": {"postgres": "ok", "redis": "ok"}},
                {
                    "status": "unavailable",
                    "checks": {"postgres": "ok", "redis": "error: Connection refused"},
                },
            ]
        }
    )
    status: Literal["ok", "unavailable"]
    checks: dict[str, str]


# --- the examples OpenAPI shows beside each route -----------------------------------------

CREATE_JOB_EXAMPLES: dict[str, Example] = {
    "minimal": {
        "summary": "Run now, at the queue's default priority",
        "value": {"queue_name": "email-sending", "payload": {"to": "a@example.com"}},
    },
    "scheduled": {
        "summary": "Urgent, not before a time, at most 5 attempts",
        "value": {
            "queue_name": "webhook:process",
            "payload": {"url": "https://example.com/hook", "event": "bounce"},
            "priority": 10,
            "run_at": "2026-11-28T09:00:00+01:00",
            "max_attempts": 5,
        },
    },
}


def documented(
    model: type[BaseModel], description: str, examples: dict[str, tuple[str, Any]]
) -> dict[str, Any]:
    """An entry of a route's `responses`: the body's model, and named examples (summary,
    value) of this very response, since error models are shared between statuses."""
    return {
        "model": model,
        "description": description,
        "content": {
            "application/json": {
                "examples": {
                    name: {"summary": summary, "value": value}
                    for name, (summary, value) in examples.items()
                }
            }
        },
    }


def field_error(loc: list[str | int], msg: str, type_: str) -> dict[str, Any]:
    return {"detail": [{"loc": loc, "msg": msg, "type": type_}]}


UNAVAILABLE_DETAIL = "a backing service (PostgreSQL) is unavailable; retry later"
UNAVAILABLE_EXAMPLES = {"unavailable": ("PostgreSQL is down", {"detail": UNAVAILABLE_DETAIL})}


def bad_job_id(description: str) -> dict[str, Any]:
    """The 422 of a route whose path holds a job id."""
    return documented(
        ValidationErrorOut,
        description,
        {
            "not_a_uuid": (
                "Malformed id",
                field_error(
                    ["path", "job_id"],
                    "Input should be a valid UUID, invalid length: found 3",
                    "uuid_parsing",
                ),
            )
        },
    )


CREATE_JOB_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: documented(
        JobCreated,
        "The Idempotency-Key made this job before, with the same body: the first answer "
        "again (status as it was created).",
        {
            "replayed": (
                "A retried request",
                {
                    "job_id": "0b9d6f7e-3f7c-4a36-9a51-2f7f1b0e9c11",
                    "status": "queued",
                    "queue_name": "email-sending",
                    "priority": 75,
                },
            )
        },
    ),
    409: documented(
        ValidationErrorOut,
        "The Idempotency-Key was used with a different request body; nothing written.",
        {
            "key_reused": (
                "Same key, other body",
                field_error(
                    ["header", "Idempotency-Key"],
                    "this idempotency key was used with a different request",
                    "idempotency_key_reused",
                ),
            )
        },
    ),
    413: documented(
        ValidationErrorOut,
        "The payload is over MAX_PAYLOAD_BYTES; nothing written.",
        {
            "too_large": (
                "Payload over the limit",
                field_error(
                    ["body", "payload"], "payload is 300000 bytes; the limit is 262144", "too_large"
                ),
            )
        },
    ),
    422: documented(
        ValidationErrorOut,
        "A field is invalid: unknown queue, payload not an object, priority or max_attempts "
        "out of bounds, run_at not ISO 8601 with an offset, an unknown field; nothing written.",
        {
            "unknown_queue": (
                "No such queue",
                field_error(["body", "queue_name"], "unknown queue 'emails'", "unknown_queue"),
            ),
            "out_of_bounds": (
                "Priority out of bounds",
                field_error(
                    ["body", "priority"],
                    "Input should be less than or equal to 1000",
                    "less_than_equal",
                ),
            ),
            "no_offset": (
                "run_at without a UTC offset",
                field_error(
                    ["body", "run_at"], "Input should have timezone info", "timezone_aware"
                ),
            ),
            "unknown_field": (
                "A misspelt field",
                field_error(
                    ["body", "priorty"], "Extra inputs are not permitted", "extra_forbidden"
                ),
            ),
            "payload_schema": (
                "Payload does not match the queue's payload model",
                field_error(["body", "payload", "to"], "Field required", "missing"),
            ),
        },
    ),
    503: documented(
        MessageOut, "PostgreSQL is unavailable; nothing written.", UNAVAILABLE_EXAMPLES
    ),
}

GET_JOB_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: documented(
        MessageOut,
        "No job has this id.",
        {"not_found": ("Unknown id", {"detail": "job not found"})},
    ),
    422: documented(
        ValidationErrorOut,
        "The id is not a UUID.",
        {
            "not_a_uuid": (
                "Malformed id",
                field_error(
                    ["path", "job_id"],
                    "Input should be a valid UUID, invalid character: found `n` at 0",
                    "uuid_parsing",
                ),
            )
        },
    ),
    503: documented(MessageOut, "PostgreSQL is unavailable.", UNAVAILABLE_EXAMPLES),
}

READY_RESPONSES: dict[int | str, dict[str, Any]] = {
    503: documented(
        ReadyOut,
        "PostgreSQL or Redis is unavailable; `checks` names which, and why.",
        {
            "redis_down": (
                "Redis refuses connections",
                {
                    "status": "unavailable",
                    "checks": {
                        "postgres": "ok",
                        "redis": "error: Error 111 connecting to 127.0.0.1:6379. "
                        "Connection refused.",
                    },
                },
            ),
            "postgres_hung": (
                "PostgreSQL does not answer in time",
                {
                    "status": "unavailable",
                    "checks": {"postgres": "error: TimeoutError", "redis": "ok"},
                },
            ),
        },
    )
}


def restore_null_examples(document: dict[str, Any]) -> None:
    """FastAPI drops every null from the OpenAPI document, examples included
    (fastapi/fastapi#5559), so a job's example would lack its null `failed_at`: put each
    model's own examples back into its schema."""
    from app.api import ops_schemas  # the operators' models (they import this module)

    for name, schema in document.get("components", {}).get("schemas", {}).items():
        model = globals().get(name) or getattr(ops_schemas, name, None)
        if isinstance(model, type) and issubclass(model, BaseModel) and "examples" in schema:
            schema["examples"] = model.model_json_schema()["examples"]
