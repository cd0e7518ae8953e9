"""Jobs name their queue without a foreign key: the inserts lock the queue row once.

The foreign key jobs.queue_name -> job_queues.name checked every inserted row on its
own (a lookup and a FOR KEY SHARE lock of the queue row per job: some 50 ms of a
10,000-job INSERT, a sixth of it), although every INSERT of a job already joins its
queue row and skips a job whose queue does not exist. The inserts now take that same
FOR KEY SHARE lock in their join (app.db.inserts, app.db.schedules), so a queue row
deleted while jobs are inserted into it still waits for them, or they for it; and a
trigger deletes a deleted queue's jobs, as ON DELETE CASCADE did. (Oban and River have
no such key either: their queues are configuration.)

Revision ID: 0011_queue_lock
Revises: 0010_direct_push
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011_queue_lock"
down_revision: str | None = "0010_direct_push"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint("fk_jobs_queue_name_job_queues", "jobs", type_="foreignkey")
    op.execute(
        """
        CREATE FUNCTION hybridq_delete_queue_jobs() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM jobs WHERE queue_name = OLD.name;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER job_queues_delete_jobs AFTER DELETE ON job_queues FOR EACH ROW "
        "EXECUTE FUNCTION hybridq_delete_queue_jobs()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS job_queues_delete_jobs ON job_queues")
    op.execute("DROP FUNCTION IF EXISTS hybridq_delete_queue_jobs()")
    op.create_foreign_key(
        "fk_jobs_queue_name_job_queues",
        "jobs",
        "job_queues",
        ["queue_name"],
        ["name"],
        ondelete="CASCADE",
    )
