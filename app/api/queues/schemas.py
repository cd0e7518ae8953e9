"""Bodies of the queue routes, with the examples OpenAPI shows."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator

from app.api.pagination import Page
from app.jobs.model import PRIORITY_MAX, PRIORITY_MIN
from app.registry import validate_queue_name

RATE_LIMIT_MAX = 1_000_000
RATE_PERIOD_MAX = 7 * 86_400.0
RUNNING_MAX = 1_000_000


class QueueLimitFields(BaseModel):
    """The limits of a queue; null: no such limit (the default)."""

    rate_limit: int | None = Field(
        None,
        ge=1,
        le=RATE_LIMIT_MAX,
        description="At most this many jobs of the queue start per rate_period, across "
        "every worker; null: no rate limit.",
    )
    rate_period: float = Field(
        1.0, gt=0, le=RATE_PERIOD_MAX, description="Seconds of the rate limit's window."
    )
    max_running: int | None = Field(
        None,
        ge=1,
        le=RUNNING_MAX,
        description="At most this many jobs of the queue running (or handed to workers) at "
        "once, across every worker; null: no limit.",
    )
    max_running_per_key: int | None = Field(
        None,
        ge=1,
        le=RUNNING_MAX,
        description="At most this many jobs with the same concurrency_key running at once; "
        "jobs without a key are not limited by it; null: no limit.",
    )


class RedisDepths(BaseModel):
    high: int
    normal: int
    low: int


class QueueOut(QueueLimitFields):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "email-sending",
                    "default_priority": 100,
                    "is_active": True,
                    "created": "2026-11-28T08:00:00Z",
                    "counts": {"queued": 1200, "migrated_to_redis": 500, "completed": 98000},
                    "counts_exact": True,
                    "counted_at": "2026-11-30T09:15:02.125Z",
                    "redis_depth": {"high": 12, "normal": 480, "low": 8},
                    "oldest_due_age_seconds": 2.4,
                }
            ]
        }
    )

    name: str
    default_priority: int
    is_active: bool = Field(description="False: paused; jobs are accepted but not moved.")
    created: datetime
    counts: dict[str, int] | None = Field(
        description="Jobs by status in PostgreSQL; null when counting took longer than "
        "STATS_TIMEOUT."
    )
    counts_exact: bool
    counted_at: datetime = Field(
        description="When the count began: the counts are as of then (at most "
        "STATS_MAX_AGE seconds ago; the process shares one count between requests)."
    )
    redis_depth: RedisDepths = Field(description="Length of each of its three Redis lists.")
    oldest_due_age_seconds: float | None = Field(
        description="Age of its oldest due job not yet started (queued and due, or waiting "
        "in Redis), measured from its run_at; null if none."
    )


class QueuePage(Page[QueueOut]):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": QueueOut.model_config["json_schema_extra"]["examples"],  # type: ignore[index]
                    "next_cursor": None,
                }
            ]
        }
    )


class QueueCreate(QueueLimitFields):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"name": "sms-sending", "default_priority": 80, "is_active": True},
                {"name": "smtp-provider-a", "rate_limit": 50, "rate_period": 1.0},
                {"name": "mailbox-warmup", "max_running": 20, "max_running_per_key": 1},
            ]
        },
    )

    name: str = Field(min_length=1, max_length=100, description="1-100 characters, no whitespace.")
    # Strict, as every number and flag a request carries: true is not 1, "1" is not 1.
    default_priority: StrictInt = Field(100, ge=PRIORITY_MIN, le=PRIORITY_MAX)
    is_active: StrictBool = True

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        validate_queue_name(value)
        return value


class QueueUpdate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"is_active": False},
                {"default_priority": 40},
                {"rate_limit": 1000, "rate_period": 3600},
                {"max_running": None},
            ]
        },
    )

    is_active: StrictBool | None = Field(
        None, description="False pauses the queue, true resumes it."
    )
    default_priority: StrictInt | None = Field(None, ge=PRIORITY_MIN, le=PRIORITY_MAX)
    rate_limit: StrictInt | None = Field(
        None, ge=1, le=RATE_LIMIT_MAX, description="Starts per rate_period; null clears it."
    )
    rate_period: float | None = Field(
        None, gt=0, le=RATE_PERIOD_MAX, description="Seconds of the rate limit's window."
    )
    max_running: StrictInt | None = Field(
        None, ge=1, le=RUNNING_MAX, description="Jobs running at once; null clears it."
    )
    max_running_per_key: StrictInt | None = Field(
        None, ge=1, le=RUNNING_MAX, description="Jobs per concurrency_key at once; null clears it."
    )


class QueueSettingsOut(QueueLimitFields):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "sms-sending",
                    "default_priority": 80,
                    "is_active": True,
                    "created": "2026-11-28T08:00:00Z",
                }
            ]
        }
    )
    name: str
    default_priority: int
    is_active: bool
    created: datetime
