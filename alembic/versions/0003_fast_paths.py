"""Fast paths: a row-level wake-up trigger, and the migrator's ordering index.

- The statement-level UPDATE trigger materialised every updated row (claims and
  completions included) into a transition table only to look for queued ones. A
  row-level trigger with a WHEN clause is evaluated in C per row and calls the function
  only for rows that become queued (retries, replays, hand-backs, rescues).
- idx_jobs_due_order serves the migrator's ORDER BY priority, created_at: it reads due
  jobs in order and stops after a batch, instead of sorting every due job per batch.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS jobs_notify_update ON jobs")
    op.execute(
        """
        CREATE FUNCTION hybridq_notify_requeued() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            -- One notification per transaction: identical payloads are folded.
            PERFORM pg_notify('hybridq_jobs_queued', '');
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER jobs_notify_requeued AFTER UPDATE OF status ON jobs FOR EACH ROW "
        "WHEN (NEW.status = 'queued' AND OLD.status IS DISTINCT FROM 'queued') "
        "EXECUTE FUNCTION hybridq_notify_requeued()"
    )
    op.create_index(
        "idx_jobs_due_order",
        "jobs",
        ["priority", "created_at"],
        postgresql_where=sa.text("status = 'queued'"),
    )


def downgrade() -> None:
    op.drop_index("idx_jobs_due_order", table_name="jobs")
    op.execute("DROP TRIGGER IF EXISTS jobs_notify_requeued ON jobs")
    op.execute("DROP FUNCTION IF EXISTS hybridq_notify_requeued()")
    op.execute(
        "CREATE TRIGGER jobs_notify_update AFTER UPDATE ON jobs "
        "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
        "EXECUTE FUNCTION hybridq_notify_queued()"
    )
