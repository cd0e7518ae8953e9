"""Limits and blocked backlogs: a `scheduled` status, per-queue moves, queue limits.

- `scheduled`: a job not yet due. A BEFORE trigger turns every row written as `queued`
  with a future run_at into `scheduled` (inserts, retries, hand-backs, snoozes: whichever
  statement writes it), so `queued` means "due now" and the migrator's indexes hold only
  due jobs. The migrator promotes due scheduled jobs (idx_jobs_scheduled, by run_at).
  Existing future queued rows become scheduled here.
- idx_jobs_queue_due (queue_name, priority, created_at): the migrator moves per active,
  non-full queue, so a paused or full queue's backlog is never read. It replaces the
  global due-order indexes idx_jobs_queuer and idx_jobs_due_order.
- Queue limits (job_queues): rate_limit per rate_period seconds, max_running, and
  max_running_per_key for jobs with a `concurrency_key`. Jobs moved under a limit are
  marked `limited`, and only they enter the two partial indexes that count a limited
  queue's jobs in flight and its recent starts: unlimited queues pay nothing.

Revision ID: 0009_limits
Revises: 0008_scale
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_limits"
down_revision: str | None = "0008_scale"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = (
    "'queued', 'migrated_to_redis', 'running', 'completed', 'failed', 'cancelled', 'discarded'"
)
NEW_STATUSES = OLD_STATUSES + ", 'scheduled'"


def upgrade() -> None:
    op.drop_constraint("ck_jobs_status", "jobs", type_="check")
    op.create_check_constraint("ck_jobs_status", "jobs", f"status IN ({NEW_STATUSES})")

    op.add_column("jobs", sa.Column("concurrency_key", sa.Text(), nullable=True))
    op.add_column("jobs", sa.Column("limited", sa.Boolean(), nullable=True))
    op.add_column("job_queues", sa.Column("rate_limit", sa.Integer(), nullable=True))
    op.add_column(
        "job_queues",
        sa.Column("rate_period", sa.Float(), server_default=sa.text("1.0"), nullable=False),
    )
    op.add_column("job_queues", sa.Column("max_running", sa.Integer(), nullable=True))
    op.add_column("job_queues", sa.Column("max_running_per_key", sa.Integer(), nullable=True))
    op.create_check_constraint("ck_job_queues_rate_limit", "job_queues", "rate_limit >= 1")
    op.create_check_constraint("ck_job_queues_rate_period", "job_queues", "rate_period > 0")
    op.create_check_constraint("ck_job_queues_max_running", "job_queues", "max_running >= 1")
    op.create_check_constraint("ck_job_queues_max_running_per_key", "job_queues", "max_running_per_key >= 1")

    # The WHEN clause is evaluated in C per row: the function runs only for the rows it
    # changes. now() is the transaction's time, as in the statement that wrote the row.
    op.execute(
        """
        CREATE FUNCTION hybridq_schedule_future() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            NEW.status := 'scheduled';
            RETURN NEW;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER jobs_schedule_future_insert BEFORE INSERT ON jobs FOR EACH ROW "
        "WHEN (NEW.status = 'queued' AND NEW.run_at > now()) "
        "EXECUTE FUNCTION hybridq_schedule_future()"
    )
    op.execute(
        "CREATE TRIGGER jobs_schedule_future_update BEFORE UPDATE OF status, run_at ON jobs "
        "FOR EACH ROW WHEN (NEW.status = 'queued' AND NEW.run_at > now()) "
        "EXECUTE FUNCTION hybridq_schedule_future()"
    )
    op.execute("UPDATE jobs SET status = 'scheduled' WHERE status = 'queued' AND run_at > now()")
    # A job that becomes scheduled (a retry waiting for its backoff) wakes the migrator
    # too, so that it sleeps until that run_at rather than its poll interval.
    op.execute("DROP TRIGGER IF EXISTS jobs_notify_requeued ON jobs")
    op.execute(
        "CREATE TRIGGER jobs_notify_requeued AFTER UPDATE OF status ON jobs FOR EACH ROW "
        "WHEN (NEW.status IN ('queued', 'scheduled') AND OLD.status IS DISTINCT FROM NEW.status) "
        "EXECUTE FUNCTION hybridq_notify_requeued()"
    )

    op.create_index(
        "idx_jobs_scheduled", "jobs", ["run_at"], postgresql_where=sa.text("status = 'scheduled'")
    )
    op.create_index(
        "idx_jobs_queue_due",
        "jobs",
        ["queue_name", "priority", "created_at"],
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.create_index(
        "idx_jobs_queued_keys",
        "jobs",
        ["queue_name", "concurrency_key", "priority", "created_at"],
        postgresql_where=sa.text("status = 'queued' AND concurrency_key IS NOT NULL"),
    )
    op.create_index(
        "idx_jobs_limited_in_flight",
        "jobs",
        ["queue_name", "concurrency_key"],
        postgresql_where=sa.text("limited AND status IN ('migrated_to_redis', 'running')"),
    )
    op.create_index(
        "idx_jobs_limited_started",
        "jobs",
        ["queue_name", "started_at"],
        postgresql_where=sa.text("limited"),
    )
    op.drop_index("idx_jobs_queuer", table_name="jobs")
    op.drop_index("idx_jobs_due_order", table_name="jobs")


def downgrade() -> None:
    op.create_index(
        "idx_jobs_due_order",
        "jobs",
        ["priority", "created_at"],
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.create_index(
        "idx_jobs_queuer",
        "jobs",
        ["status", "run_at", "priority", "created_at"],
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.drop_index("idx_jobs_limited_started", table_name="jobs")
    op.drop_index("idx_jobs_limited_in_flight", table_name="jobs")
    op.drop_index("idx_jobs_queued_keys", table_name="jobs")
    op.drop_index("idx_jobs_queue_due", table_name="jobs")
    op.drop_index("idx_jobs_scheduled", table_name="jobs")
    op.execute("DROP TRIGGER IF EXISTS jobs_notify_requeued ON jobs")
    op.execute(
        "CREATE TRIGGER jobs_notify_requeued AFTER UPDATE OF status ON jobs FOR EACH ROW "
        "WHEN (NEW.status = 'queued' AND OLD.status IS DISTINCT FROM 'queued') "
        "EXECUTE FUNCTION hybridq_notify_requeued()"
    )
    op.execute("DROP TRIGGER IF EXISTS jobs_schedule_future_update ON jobs")
    op.execute("DROP TRIGGER IF EXISTS jobs_schedule_future_insert ON jobs")
    op.execute("DROP FUNCTION IF EXISTS hybridq_schedule_future()")
    op.execute("UPDATE jobs SET status = 'queued' WHERE status = 'scheduled'")
    for name in ("max_running_per_key", "max_running", "rate_period", "rate_limit"):
        op.drop_constraint(f"ck_job_queues_{name}", "job_queues", type_="check")
    for name in ("max_running_per_key", "max_running", "rate_period", "rate_limit"):
        op.drop_column("job_queues", name)
    op.drop_column("jobs", "limited")
    op.drop_column("jobs", "concurrency_key")
    op.drop_constraint("ck_jobs_status", "jobs", type_="check")
    op.create_check_constraint("ck_jobs_status", "jobs", f"status IN ({OLD_STATUSES})")
