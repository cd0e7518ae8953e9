"""The direct path (app.direct): an INSERT that pushes its own jobs does not wake the
migrator.

A producer on the direct path writes the jobs it pushes `migrated_to_redis`; waking the
migrator for them would cost it a pass for nothing per insert. Such an INSERT sets
`hybridq.direct` for its transaction, and the statement-level INSERT trigger then stays
quiet; the producer wakes the migrator itself when some of its jobs were written queued
or scheduled (a paused or limited queue, a job for later).

Revision ID: 0010_direct_push
Revises: 0009_limits
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010_direct_push"
down_revision: str | None = "0009_limits"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION hybridq_notify_inserted() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF current_setting('hybridq.direct', true) IS DISTINCT FROM 'on' THEN
                PERFORM pg_notify('hybridq_jobs_queued', '');
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute("DROP TRIGGER IF EXISTS jobs_notify_insert ON jobs")
    op.execute(
        "CREATE TRIGGER jobs_notify_insert AFTER INSERT ON jobs FOR EACH STATEMENT "
        "EXECUTE FUNCTION hybridq_notify_inserted()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS jobs_notify_insert ON jobs")
    op.execute(
        "CREATE TRIGGER jobs_notify_insert AFTER INSERT ON jobs FOR EACH STATEMENT "
        "EXECUTE FUNCTION hybridq_notify_requeued()"
    )
    op.execute("DROP FUNCTION IF EXISTS hybridq_notify_inserted()")
