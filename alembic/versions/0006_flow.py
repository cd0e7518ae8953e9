"""Time and flow (issue 14): snoozes counted per job; cancel requests of running jobs;
periodic jobs (schedules and their ticks, one job per tick by schedule_ticks' key).

Additive only: old processes keep working against this schema (the new column has a
default and nothing old reads it).

Revision ID: 0006_flow
Revises: 0005
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006_flow"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    # How many times a handler snoozed the job (bounded by MAX_SNOOZES).
    op.add_column(
        "jobs",
        sa.Column("snooze_count", sa.Integer(), nullable=False, server_default=sa.text("0")),
    )

    # A cancel asked of a running job: who asked, why; its worker stops it and ends it
    # `cancelled` (the request is on the row so a worker that missed the message sees it
    # with its next heartbeat).
    op.add_column("jobs", sa.Column("cancel_requested_at", TZ, nullable=True))
    op.add_column("jobs", sa.Column("cancel_requested_by", sa.Text(), nullable=True))
    op.add_column("jobs", sa.Column("cancel_reason", sa.Text(), nullable=True))
    # Maintenance looks for cancels no worker will carry out every pass: the few jobs
    # with a pending request, never a scan of the table.
    op.create_index(
        "idx_jobs_cancel_pending",
        "jobs",
        ["status"],
        postgresql_where=sa.text(
            "cancel_requested_at IS NOT NULL "
            "AND status IN ('queued', 'migrated_to_redis', 'running')"
        ),
    )

    op.create_table(
        "schedules",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("queue_name", sa.String(100), nullable=False),
        sa.Column("cron", sa.Text(), nullable=False),
        sa.Column("timezone", sa.Text(), nullable=False, server_default="UTC"),
        sa.Column(
            "payload",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=False,
            server_default=sa.text("'{}'::jsonb"),
        ),
        sa.Column("priority", sa.Integer(), nullable=True),
        sa.Column("max_attempts", sa.Integer(), nullable=False, server_default=sa.text("3")),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.text("true")),
        sa.Column("source", sa.String(10), nullable=False, server_default="api"),
        sa.Column("ticks_from", TZ, nullable=False, server_default=sa.text("now()")),
        sa.Column("last_tick", TZ, nullable=True),
        sa.Column("last_job_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.text("now()")),
        sa.Column("updated_at", TZ, nullable=False, server_default=sa.text("now()")),
        sa.CheckConstraint("source IN ('code', 'api')", name="ck_schedules_source"),
        sa.CheckConstraint("max_attempts >= 1", name="ck_schedules_max_attempts"),
        sa.ForeignKeyConstraint(
            ["queue_name"],
            ["job_queues.name"],
            name="fk_schedules_queue_name_job_queues",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("name", name="pk_schedules"),
    )
    op.create_table(
        "schedule_ticks",
        sa.Column("schedule_name", sa.String(100), nullable=False),
        sa.Column("tick", TZ, nullable=False),
        sa.Column("job_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.text("now()")),
        sa.ForeignKeyConstraint(
            ["schedule_name"],
            ["schedules.name"],
            name="fk_schedule_ticks_schedule_name_schedules",
            ondelete="CASCADE",
        ),
        # One job per tick, however many schedulers run: the insert of a tick that
        # exists already does nothing.
        sa.PrimaryKeyConstraint("schedule_name", "tick", name="pk_schedule_ticks"),
    )


def downgrade() -> None:
    op.drop_table("schedule_ticks")
    op.drop_table("schedules")
    op.drop_index("idx_jobs_cancel_pending", table_name="jobs")
    op.drop_column("jobs", "cancel_reason")
    op.drop_column("jobs", "cancel_requested_by")
    op.drop_column("jobs", "cancel_requested_at")
    op.drop_column("jobs", "snooze_count")
