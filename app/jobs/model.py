"""What a job is: its limits, its statuses, and the row a request to create one becomes.
Shared by the API, the producer library and the worker; plain dataclasses, so that a
worker loads no pydantic (the request models, which validate HTTP and producer input,
are app.jobs.request)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

PRIORITY_MIN: Final = 0
PRIORITY_MAX: Final = 1000
MAX_ATTEMPTS_MAX: Final = 100
QUEUE_NAME_MAX: Final = 100
BATCH_MAX: Final = 1000
KEY_MAX: Final = 255
REASON_MAX: Final = 1000


JobStatus = Literal[
    "queued",
    "migrated_to_redis",
    "running",
    "completed",
    "failed",
    "cancelled",
    "discarded",
    "scheduled",
]


@dataclass(frozen=True, slots=True)
class JobToInsert:
    """A validated job request; `payload_json` is the payload as JSON text."""

    queue_name: str
    payload_json: str
    priority: int | None = None
    run_at: datetime | None = None
    max_attempts: int = 3
    idempotency_key: str | None = None
    request_hash: str | None = None
    concurrency_key: str | None = None


@dataclass(frozen=True, slots=True)
class CreatedJob:
    id: uuid.UUID
    status: str
    queue_name: str
    priority: int
    created_at: datetime


InsertOutcome = Literal["created", "existing", "key_conflict", "unknown_queue"]


@dataclass(frozen=True, slots=True)
class InsertResult:
    """What became of one requested job. `job` is set for created and existing; for an
    existing one (same key, same request) its status is reported as at creation."""

    outcome: InsertOutcome
    job: CreatedJob | None = None
