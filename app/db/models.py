"""SQLAlchemy models: the schema's single definition in Python.

Alembic migrations must produce exactly this metadata (a test compares them). The hot
paths do not go through the ORM: see the stores under `app.db` for the named SQL
statements, and `app.jobs.transitions` for the statuses they move jobs between.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    Interval,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.jobs.transitions import JOB_STATUSES, TERMINAL_STATUSES

# The seed's queues, created by the first migration.
SEED_QUEUES: Final = (
    "email-sending",
    "analytics:daily-aggregate",
    "analytics:campaign-aggregate",
    "analytics:billing-calculate",
    "warmup:process",
    "bounce:process",
    "webhook:process",
)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

TZ = DateTime(timezone=True)

# The terminal statuses as an SQL list, for partial index predicates.
TERMINAL_SQL: Final = "(" + ", ".join(f"'{s}'" for s in TERMINAL_STATUSES) + ")"


def _status_check(column: str, statuses: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{s}'" for s in statuses)
    return f"{column} IN ({quoted})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class JobQueue(Base):
    __tablename__ = "job_queues"
    __table_args__ = (
        CheckConstraint("rate_limit >= 1", name="rate_limit"),
        CheckConstraint("rate_period > 0", name="rate_period"),
        CheckConstraint("max_running >= 1", name="max_running"),
        CheckConstraint("max_running_per_key >= 1", name="max_running_per_key"),
    )

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    default_priority: Mapped[int] = mapped_column(
        Integer, nullable=False, server_default=text("100")
    )
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    created: Mapped[datetime] = mapped_column(TZ, nullable=False, server_default=text("now()"))
    # Limits (NULL: none): at most rate_limit starts per rate_period seconds; at most
    # max_running jobs in flight (moved or running); per concurrency_key at most
    # max_running_per_key. The migrator moves only what may start (app.migrator.limits).
    rate_limit: Mapped[int | None] = mapped_column(Integer)
    rate_period: Mapped[float] = mapped_column(Float, nullable=False, server_default=text("1.0"))
    max_running: Mapped[int | None] = mapped_column(Integer)
    max_running_per_key: Mapped[int | None] = mapped_column(Integer)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(_status_check("status", JOB_STATUSES), name="status"),
        CheckConstraint("attempt_count >= 0", name="attempt_count"),
        CheckConstraint("max_attempts >= 1", name="max_attempts"),
        # Migrator: a queue's due (queued) jobs in (priority, created_at) order; jobs not
        # yet due are `scheduled` (a trigger sees to it), promoted by run_at.
        Index(
            "idx_jobs_queue_due",
            "queue_name",
            "priority",
            "created_at",
            postgresql_where=text("status = 'queued'"),
        ),
        Index("idx_jobs_scheduled", "run_at", postgresql_where=text("status = 'scheduled'")),
        # The oldest due job of a queue (GET /queues).
        Index(
            "idx_jobs_queue_migration",
            "queue_name",
            "status",
            "run_at",
            "priority",
            postgresql_where=text("status = 'queued'"),
        ),
        # Limits: a key-limited queue's due jobs by key, and a limited queue's jobs in
        # flight and recent starts (only jobs moved under a limit are `limited`).
        Index(
            "idx_jobs_queued_keys",
            "queue_name",
            "concurrency_key",
            "priority",
            "created_at",
            postgresql_where=text("status = 'queued' AND concurrency_key IS NOT NULL"),
        ),
        Index(
            "idx_jobs_limited_in_flight",
            "queue_name",
            "concurrency_key",
            postgresql_where=text("limited AND status IN ('migrated_to_redis', 'running')"),
        ),
        Index(
            "idx_jobs_limited_started", "queue_name", "started_at", postgresql_where=text("limited")
        ),
        # Recovery of popped-but-unclaimed jobs: migrated jobs by the time they moved.
        Index(
            "idx_jobs_migrated",
            "updated_at",
            postgresql_where=text("status = 'migrated_to_redis'"),
        ),
        # Retention: terminal jobs by the time they became terminal.
        Index(
            "idx_jobs_finished",
            "updated_at",
            postgresql_where=text(f"status IN {TERMINAL_SQL}"),
        ),
        # Lease rescue: running jobs by lease expiry.
        Index(
            "idx_jobs_running_lease",
            "lease_expires_at",
            postgresql_where=text("status = 'running'"),
        ),
        # Idempotency-Key: the truth of "this key already made a job".
        Index(
            "uq_jobs_idempotency_key",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        # Dead letters, newest first (GET /dead-letter, bulk replay).
        Index(
            "idx_jobs_dead_letter",
            "failed_at",
            "id",
            postgresql_where=text("status = 'failed'"),
        ),
        # Cancels asked and not yet carried out (maintenance's abandoned-cancel pass).
        Index(
            "idx_jobs_cancel_pending",
            "status",
            postgresql_where=text(
                "cancel_requested_at IS NOT NULL "
                "AND status IN ('queued', 'migrated_to_redis', 'running')"
            ),
        ),
        # Job listings (GET /jobs), newest first: the primary key (UUIDv7 ids are
        # time-ordered); per queue, jobs at rest (queued or terminal) here and the few in
        # flight from their own indexes; rarer terminal statuses by themselves.
        Index(
            "idx_jobs_at_rest_by_queue",
            "queue_name",
            "id",
            postgresql_where=text("status NOT IN ('migrated_to_redis', 'running')"),
        ),
        Index(
            "idx_jobs_rare_terminal",
            "status",
            "id",
            postgresql_where=text("status IN ('failed', 'cancelled', 'discarded')"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("hybridq_uuidv7()")
    )
    # No foreign key: the inserts lock the queue row, and a trigger deletes a deleted
    # queue's jobs (migration 0011).
    queue_name: Mapped[str] = mapped_column(String(100), nullable=False)
    status: Mapped[str] = mapped_column(String(50), nullable=False, server_default="queued")
    priority: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("100"))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    attempt_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("3"))
    run_at: Mapped[datetime] = mapped_column(TZ, nullable=False, server_default=text("now()"))
    started_at: Mapped[datetime | None] = mapped_column(TZ)
    completed_at: Mapped[datetime | None] = mapped_column(TZ)
    failed_at: Mapped[datetime | None] = mapped_column(TZ)
    last_error_message: Mapped[str | None] = mapped_column(Text)
    # The fence of the current attempt: (worker_id, attempt_count, lease_token), the
    # token drawn at random by each claim.
    worker_id: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None] = mapped_column(TZ)
    lease_token: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    # Leases that expired (the worker died or hung): not failed attempts.
    stall_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    # Idempotency-Key of the request that made the job, and a hash of its canonical body.
    idempotency_key: Mapped[str | None] = mapped_column(Text)
    request_hash: Mapped[str | None] = mapped_column(Text)
    # Times a handler snoozed the job (Snooze): not attempts, bounded by MAX_SNOOZES.
    snooze_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    # A cancel asked of the running job (POST /jobs/{id}/cancel): when, by whom, why.
    cancel_requested_at: Mapped[datetime | None] = mapped_column(TZ)
    cancel_requested_by: Mapped[str | None] = mapped_column(Text)
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    # Jobs with the same key run at most max_running_per_key at once (if the queue sets it).
    concurrency_key: Mapped[str | None] = mapped_column(Text)
    # Moved under a queue limit: counted by the limit's indexes until it ends.
    limited: Mapped[bool | None] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(TZ, nullable=False, server_default=text("now()"))
    updated_at: Mapped[datetime] = mapped_column(TZ, nullable=False, server_default=text("now()"))


class JobCount(Base):
    """Jobs by queue and terminal status, as of the last fold of job_count_changes
    (app.db.counts); the triggers of migration 0005 keep both."""

    __tablename__ = "job_counts"

    queue_name: Mapped[str] = mapped_column(String(100), primary_key=True)
    status: Mapped[str] = mapped_column(String(50), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger, nullable=False)


# Changes of the counts not folded yet: append-only, so no primary key (and no index
# entry per finished job).
job_count_changes = Table(
    "job_count_changes",
    Base.metadata,
    Column("queue_name", String(100), nullable=False),
    Column("status", String(50), nullable=False),
    Column("n", BigInteger, nullable=False),
)


class JobLog(Base):
    __tablename__ = "job_logs"
    __table_args__ = (Index("idx_job_logs_worker", "job_id", "attempt_number", "finished_at"),)

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    job_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
    )
    status: Mapped[str] = mapped_column(String(50), nullable=False)
    log_message: Mapped[str | None] = mapped_column(Text)
    attempt_number: Mapped[int] = mapped_column(Integer, nullable=False)
    worker_id: Mapped[str | None] = mapped_column(String(255))
    # Who made an operator's change (replay, cancel, discard); NULL for a worker's attempt.
    actor: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(TZ, nullable=False, server_default=text("now()"))
    finished_at: Mapped[datetime | None] = mapped_column(TZ)
    duration: Mapped[timedelta | None] = mapped_column(Interval)
    created_at: Mapped[datetime] = mapped_column(TZ, nullable=False, server_default=text("now()"))


class Schedule(Base):
    """A periodic job: each tick of `cron` (read in `timezone`) creates one job."""

    __tablename__ = "schedules"
    __table_args__ = (
        CheckConstraint("source IN ('code', 'api')", name="source"),
        CheckConstraint("max_attempts >= 1", name="max_attempts"),
    )

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    queue_name: Mapped[str] = mapped_column(
        String(100), ForeignKey("job_queues.name", ondelete="CASCADE"), nullable=False
    )
    cron: Mapped[str] = mapped_column(Text, nullable=False)
    timezone: Mapped[str] = mapped_column(Text, nullable=False, server_default="UTC")
    payload: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    priority: Mapped[int | None] = mapped_column(Integer)  # NULL: the queue's default
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("3"))
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    # `code`: declared with the handler (stored again at every start); `api`: by an operator.
    source: Mapped[str] = mapped_column(String(10), nullable=False, server_default="api")
    # Ticks at or before this are never run: set at creation, when enabled again, and when
    # the cron expression or time zone changes, so none of these runs a past tick.
    ticks_from: Mapped[datetime] = mapped_column(TZ, nullable=False, server_default=text("now()"))
    last_tick: Mapped[datetime | None] = mapped_column(TZ)
    last_job_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[datetime] = mapped_column(TZ, nullable=False, server_default=text("now()"))
    updated_at: Mapped[datetime] = mapped_column(TZ, nullable=False, server_default=text("now()"))


class ScheduleTick(Base):
    """A tick that created its job: the primary key makes it one job per tick, however
    many schedulers run."""

    __tablename__ = "schedule_ticks"

    schedule_name: Mapped[str] = mapped_column(
        String(100), ForeignKey("schedules.name", ondelete="CASCADE"), primary_key=True
    )
    tick: Mapped[datetime] = mapped_column(TZ, primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    created_at: Mapped[datetime] = mapped_column(TZ, nullable=False, server_default=text("now()"))


class AnalyticsJob(Base):
    __tablename__ = "analytics_jobs"
    __table_args__ = (Index("idx_analytics_jobs_type_status", "job_type", "status", "queued_at"),)

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    job_type: Mapped[str] = mapped_column(String(100), nullable=False)
    status: Mapped[str] = mapped_column(String(50), nullable=False, server_default="queued")
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    priority: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("100"))
    queued_at: Mapped[datetime] = mapped_column(TZ, nullable=False, server_default=text("now()"))
    processed_at: Mapped[datetime | None] = mapped_column(TZ)
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TZ, nullable=False, server_default=text("now()"))


# --- The seed's jobs for real (app.handlers): email events, suppressions, aggregates ---

EMAIL_EVENTS: Final = ("sent", "deferred", "failed", "suppressed", "bounced")
BOUNCE_TYPES: Final = ("hard", "soft")


class Suppression(Base):
    """An address no email is sent to (a hard bounce put it here, or an operator)."""

    __tablename__ = "suppressions"
    __table_args__ = (CheckConstraint("address = lower(address)", name="address_lowercase"),)

    address: Mapped[str] = mapped_column(Text, primary_key=True)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    source: Mapped[str] = mapped_column(String(50), nullable=False)
    # The job that put it here (the bounce's), if any.
    job_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[datetime] = mapped_column(TZ, nullable=False, server_default=text("now()"))


class EmailEvent(Base):
    """What happened to one message: the source of the analytics. No foreign key to
    jobs: events outlive the jobs that retention deletes (billing needs them)."""

    __tablename__ = "email_events"
    __table_args__ = (
        CheckConstraint(_status_check("event", EMAIL_EVENTS), name="event"),
        CheckConstraint(
            f"bounce_type IS NULL OR {_status_check('bounce_type', BOUNCE_TYPES)}",
            name="bounce_type",
        ),
        Index("idx_email_events_occurred", "occurred_at"),
        Index("idx_email_events_campaign", "campaign_id", "occurred_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    event: Mapped[str] = mapped_column(String(20), nullable=False)
    # One event per fact, however often a job runs (at-least-once delivery).
    dedupe_key: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    job_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    message_id: Mapped[str | None] = mapped_column(Text)
    address: Mapped[str] = mapped_column(Text, nullable=False)
    campaign_id: Mapped[str | None] = mapped_column(Text)
    account_id: Mapped[str | None] = mapped_column(Text)
    bounce_type: Mapped[str | None] = mapped_column(String(10))
    detail: Mapped[str | None] = mapped_column(Text)
    occurred_at: Mapped[datetime] = mapped_column(TZ, nullable=False, server_default=text("now()"))


def _count() -> Mapped[int]:
    return mapped_column(Integer, nullable=False, server_default=text("0"))


class EmailDailyStats(Base):
    """Per campaign and UTC day (campaign_id '' = email without a campaign)."""

    __tablename__ = "email_daily_stats"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    campaign_id: Mapped[str] = mapped_column(Text, primary_key=True)
    sent: Mapped[int] = _count()
    deferred: Mapped[int] = _count()
    failed: Mapped[int] = _count()
    bounced: Mapped[int] = _count()  # hard bounces
    soft_bounced: Mapped[int] = _count()
    suppressed: Mapped[int] = _count()
    computed_at: Mapped[datetime] = mapped_column(TZ, nullable=False, server_default=text("now()"))


class EmailCampaignStats(Base):
    """Per campaign, over its whole life."""

    __tablename__ = "email_campaign_stats"

    campaign_id: Mapped[str] = mapped_column(Text, primary_key=True)
    sent: Mapped[int] = _count()
    deferred: Mapped[int] = _count()
    failed: Mapped[int] = _count()
    bounced: Mapped[int] = _count()  # hard bounces
    soft_bounced: Mapped[int] = _count()
    suppressed: Mapped[int] = _count()
    first_event_at: Mapped[datetime | None] = mapped_column(TZ)
    last_event_at: Mapped[datetime | None] = mapped_column(TZ)
    computed_at: Mapped[datetime] = mapped_column(TZ, nullable=False, server_default=text("now()"))


class BillingUsage(Base):
    """Messages sent per account and calendar month (UTC); month is its first day."""

    __tablename__ = "billing_usage"

    account_id: Mapped[str] = mapped_column(Text, primary_key=True)
    month: Mapped[date] = mapped_column(Date, primary_key=True)
    messages_sent: Mapped[int] = mapped_column(Integer, nullable=False)
    computed_at: Mapped[datetime] = mapped_column(TZ, nullable=False, server_default=text("now()"))
