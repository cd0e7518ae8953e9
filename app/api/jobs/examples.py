"""The examples and error responses OpenAPI shows for creating and reading a job."""

from __future__ import annotations

from typing import Any

from fastapi.openapi.models import Example

from app.api.common import (
    UNAVAILABLE_EXAMPLES,
    MessageOut,
    ValidationErrorOut,
    documented,
    field_error,
)
from app.api.jobs.schemas import JobCreated

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
