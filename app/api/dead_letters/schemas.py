"""Bodies of the dead-letter routes (listings use app.api.jobs.schemas.JobPage)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from app.jobs.model import QUEUE_NAME_MAX, REASON_MAX
from app.jobs.request import UtcTime


class BulkReplayIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "queue_name": "email-sending",
                    "failed_since": "2026-11-28T00:00:00Z",
                    "reason": "SMTP relay fixed",
                }
            ]
        },
    )

    queue_name: str = Field(
        min_length=1, max_length=QUEUE_NAME_MAX, description="The queue to replay."
    )
    failed_since: UtcTime | None = Field(
        None, description="Only jobs that failed at or after this time; omitted: all."
    )
    reason: str | None = Field(
        None, max_length=REASON_MAX, description="Why: written to each job's log."
    )


class BulkReplayOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"replayed": 42}]})
    replayed: int = Field(description="How many failed jobs went back to queued.")
