"""Fewer index writes per job, time-ordered ids, counters of terminal jobs.

- Ids are UUIDv7 (time-ordered): new jobs get them from the producers (uuid-utils) or
  from hybridq_uuidv7() (the column default; PostgreSQL 15 has no uuidv7()). The primary
  key then serves listings newest first, and the two full-table created_at indexes go.
- No update of `jobs` can be HOT (status is in every partial predicate), so every full
  index takes one entry per status change. The full (status, updated_at, queue_name)
  index is replaced by partial ones that only the statuses using them pay for:
  migrated jobs by updated_at (stale-pop recovery), terminal jobs by updated_at
  (retention), and jobs at rest (queued or terminal) by (queue_name, id) for listings.
  A job's life (insert, move, claim, complete) writes 12 index entries instead of 20.
- job_counts: jobs by queue and terminal status, kept by triggers (which append
  changes to job_count_changes; readers and retention fold them in), so /metrics,
  /queues and /health/queues read counters instead of counting the table. Live statuses are counted
  from their partial indexes.

Rows made before this migration keep their UUIDv4 ids; they work as before, but the
listings order them by id, which for them is not their age.

Revision ID: 0008_scale
Revises: 0007_recovery_paths
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_scale"
down_revision: str | None = "0007_recovery_paths"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TERMINAL = "('completed', 'failed', 'cancelled', 'discarded')"
IN_FLIGHT = "('migrated_to_redis', 'running')"


def upgrade() -> None:
    # UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then version 7 and random bits,
    # built from gen_random_uuid() (whose version bits 0100 become 0111 with two set_bit).
    op.execute(
        """
        CREATE FUNCTION hybridq_uuidv7(at timestamptz DEFAULT clock_timestamp())
        RETURNS uuid LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
            SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
                placing substring(int8send(floor(extract(epoch FROM at) * 1000)::bigint)
                                  FROM 3)
                FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid
        $$
        """
    )
    op.alter_column("jobs", "id", server_default=sa.text("hybridq_uuidv7()"))

    op.drop_index("idx_jobs_created", table_name="jobs")
    op.drop_index("idx_jobs_queue_created", table_name="jobs")
    op.drop_index("idx_jobs_status_timestamps", table_name="jobs")
    op.create_index(
        "idx_jobs_at_rest_by_queue",
        "jobs",
        ["queue_name", "id"],
        postgresql_where=sa.text(f"status NOT IN {IN_FLIGHT}"),
    )
    op.create_index(
        "idx_jobs_migrated",
        "jobs",
        ["updated_at"],
        postgresql_where=sa.text("status = 'migrated_to_redis'"),
    )
    op.create_index(
        "idx_jobs_finished",
        "jobs",
        ["updated_at"],
        postgresql_where=sa.text(f"status IN {TERMINAL}"),
    )
    op.create_index(
        "idx_jobs_rare_terminal",
        "jobs",
        ["status", "id"],
        postgresql_where=sa.text("status IN ('failed', 'cancelled', 'discarded')"),
    )

    op.create_table(
        "job_counts",
        sa.Column("queue_name", sa.String(100), nullable=False),
        sa.Column("status", sa.String(50), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("queue_name", "status", name="pk_job_counts"),
    )
    # Changes not yet folded into job_counts. Triggers only append here: one counter row
    # updated per job would make concurrent completions wait on each other's commit,
    # and a statement finishing thousands of jobs walk an ever longer chain of versions.
    op.create_table(
        "job_count_changes",
        sa.Column("queue_name", sa.String(100), nullable=False),
        sa.Column("status", sa.String(50), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
    )
    op.execute(
        f"""
        CREATE FUNCTION hybridq_count_status_change() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'UPDATE' AND OLD.status IN {TERMINAL} THEN
                INSERT INTO job_count_changes VALUES (OLD.queue_name, OLD.status, -1);
            END IF;
            IF NEW.status IN {TERMINAL} THEN
                INSERT INTO job_count_changes VALUES (NEW.queue_name, NEW.status, 1);
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        f"""
        CREATE FUNCTION hybridq_count_deleted() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO job_count_changes
            SELECT queue_name, status, -count(*) FROM old_rows
            WHERE status IN {TERMINAL} GROUP BY queue_name, status;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION hybridq_count_truncated() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM job_count_changes;
            DELETE FROM job_counts;
            RETURN NULL;
        END
        $$
        """
    )
    # The WHEN clauses are evaluated in C: moves and claims never call the functions.
    op.execute(
        "CREATE TRIGGER jobs_count_update AFTER UPDATE OF status ON jobs FOR EACH ROW "
        f"WHEN (OLD.status IS DISTINCT FROM NEW.status AND (NEW.status IN {TERMINAL} "
        f"OR OLD.status IN {TERMINAL})) "
        "EXECUTE FUNCTION hybridq_count_status_change()"
    )
    op.execute(
        "CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs FOR EACH ROW "
        f"WHEN (NEW.status IN {TERMINAL}) EXECUTE FUNCTION hybridq_count_status_change()"
    )
    op.execute(
        "CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs "
        "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT "
        "EXECUTE FUNCTION hybridq_count_deleted()"
    )
    op.execute(
        "CREATE TRIGGER jobs_count_truncate AFTER TRUNCATE ON jobs FOR EACH STATEMENT "
        "EXECUTE FUNCTION hybridq_count_truncated()"
    )
    # The triggers' lock on jobs keeps writers out until this commits: the initial
    # counts and the triggers' changes never overlap.
    op.execute(
        f"""
        INSERT INTO job_counts (queue_name, status, n)
        SELECT queue_name, status, count(*) FROM jobs
        WHERE status IN {TERMINAL} GROUP BY queue_name, status
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS jobs_count_truncate ON jobs")
    op.execute("DROP TRIGGER IF EXISTS jobs_count_delete ON jobs")
    op.execute("DROP TRIGGER IF EXISTS jobs_count_insert ON jobs")
    op.execute("DROP TRIGGER IF EXISTS jobs_count_update ON jobs")
    op.execute("DROP FUNCTION IF EXISTS hybridq_count_truncated()")
    op.execute("DROP FUNCTION IF EXISTS hybridq_count_deleted()")
    op.execute("DROP FUNCTION IF EXISTS hybridq_count_status_change()")
    op.drop_table("job_count_changes")
    op.drop_table("job_counts")
    op.drop_index("idx_jobs_rare_terminal", table_name="jobs")
    op.drop_index("idx_jobs_finished", table_name="jobs")
    op.drop_index("idx_jobs_migrated", table_name="jobs")
    op.drop_index("idx_jobs_at_rest_by_queue", table_name="jobs")
    op.create_index("idx_jobs_status_timestamps", "jobs", ["status", "updated_at", "queue_name"])
    op.create_index("idx_jobs_queue_created", "jobs", ["queue_name", "created_at", "id"])
    op.create_index("idx_jobs_created", "jobs", ["created_at", "id"])
    op.alter_column("jobs", "id", server_default=sa.text("gen_random_uuid()"))
    op.execute("DROP FUNCTION IF EXISTS hybridq_uuidv7(timestamptz)")
