"""Initial schema: the seed's four tables and indexes, leases, and the wake-up trigger.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEED_QUEUES = (
    "email-sending",
    "analytics:daily-aggregate",
    "analytics:campaign-aggregate",
    "analytics:billing-calculate",
    "warmup:process",
    "bounce:process",
    "webhook:process",
)
TZ = sa.DateTime(timezone=True)
NOW = sa.text("now()")
UUID_DEFAULT = sa.text("gen_random_uuid()")


def upgrade() -> None:
    op.create_table(
        "job_queues",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("default_priority", sa.Integer(), server_default=sa.text("100"), nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("created", TZ, server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_job_queues"),
    )
    op.create_table(
        "jobs",
        sa.Column("id", postgresql.UUID(as_uuid=True), server_default=UUID_DEFAULT, nullable=False),
        sa.Column("queue_name", sa.String(100), nullable=False),
        sa.Column("status", sa.String(50), server_default="queued", nullable=False),
        sa.Column("priority", sa.Integer(), server_default=sa.text("100"), nullable=False),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        sa.Column("attempt_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("max_attempts", sa.Integer(), server_default=sa.text("3"), nullable=False),
        sa.Column("run_at", TZ, server_default=NOW, nullable=False),
        sa.Column("started_at", TZ, nullable=True),
        sa.Column("completed_at", TZ, nullable=True),
        sa.Column("failed_at", TZ, nullable=True),
        sa.Column("last_error_message", sa.Text(), nullable=True),
        sa.Column("worker_id", sa.String(255), nullable=True),
        sa.Column("lease_expires_at", TZ, nullable=True),
        sa.Column("created_at", TZ, server_default=NOW, nullable=False),
        sa.Column("updated_at", TZ, server_default=NOW, nullable=False),
        sa.CheckConstraint(
            "status IN ('queued', 'migrated_to_redis', 'running', 'completed', 'failed', "
            "'cancelled')",
            name="ck_jobs_status",
        ),
        sa.CheckConstraint("attempt_count >= 0", name="ck_jobs_attempt_count"),
        sa.CheckConstraint("max_attempts >= 1", name="ck_jobs_max_attempts"),
        sa.ForeignKeyConstraint(
            ["queue_name"],
            ["job_queues.name"],
            name="fk_jobs_queue_name_job_queues",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
    )
    op.create_index(
        "idx_jobs_queuer",
        "jobs",
        ["status", "run_at", "priority", "created_at"],
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.create_index(
        "idx_jobs_queue_migration",
        "jobs",
        ["queue_name", "status", "run_at", "priority"],
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.create_index("idx_jobs_status_timestamps", "jobs", ["status", "updated_at", "queue_name"])
    op.create_index(
        "idx_jobs_running_lease",
        "jobs",
        ["lease_expires_at"],
        postgresql_where=sa.text("status = 'running'"),
    )
    op.create_table(
        "job_logs",
        sa.Column("id", postgresql.UUID(as_uuid=True), server_default=UUID_DEFAULT, nullable=False),
        sa.Column("job_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("status", sa.String(50), nullable=False),
        sa.Column("log_message", sa.Text(), nullable=True),
        sa.Column("attempt_number", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.String(255), nullable=True),
        sa.Column("started_at", TZ, server_default=NOW, nullable=False),
        sa.Column("finished_at", TZ, nullable=True),
        sa.Column("duration", sa.Interval(), nullable=True),
        sa.Column("created_at", TZ, server_default=NOW, nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_job_logs_job_id_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_job_logs"),
    )
    op.create_index(
        "idx_job_logs_worker", "job_logs", ["job_id", "attempt_number", "finished_at"]
    )
    op.create_table(
        "analytics_jobs",
        sa.Column("id", postgresql.UUID(as_uuid=True), server_default=UUID_DEFAULT, nullable=False),
        sa.Column("job_type", sa.String(100), nullable=False),
        sa.Column("status", sa.String(50), server_default="queued", nullable=False),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        sa.Column("priority", sa.Integer(), server_default=sa.text("100"), nullable=False),
        sa.Column("queued_at", TZ, server_default=NOW, nullable=False),
        sa.Column("processed_at", TZ, nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("created_at", TZ, server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_analytics_jobs"),
    )
    op.create_index(
        "idx_analytics_jobs_type_status", "analytics_jobs", ["job_type", "status", "queued_at"]
    )

    # Wake the migrator when a statement leaves jobs queued (insert, retry, replay), in
    # the statement's own transaction, so a NOTIFY is delivered only after the commit.
    op.execute(
        """
        CREATE FUNCTION hybridq_notify_queued() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT 1 FROM new_rows WHERE status = 'queued') THEN
                PERFORM pg_notify('hybridq_jobs_queued', '');
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER jobs_notify_insert AFTER INSERT ON jobs "
        "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
        "EXECUTE FUNCTION hybridq_notify_queued()"
    )
    op.execute(
        "CREATE TRIGGER jobs_notify_update AFTER UPDATE ON jobs "
        "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
        "EXECUTE FUNCTION hybridq_notify_queued()"
    )

    queues = sa.table("job_queues", sa.column("name", sa.String))
    op.bulk_insert(queues, [{"name": name} for name in SEED_QUEUES])


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS jobs_notify_update ON jobs")
    op.execute("DROP TRIGGER IF EXISTS jobs_notify_insert ON jobs")
    op.execute("DROP FUNCTION IF EXISTS hybridq_notify_queued()")
    op.drop_table("analytics_jobs")
    op.drop_table("job_logs")
    op.drop_table("jobs")
    op.drop_table("job_queues")
