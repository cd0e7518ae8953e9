"""A plain statement-level wake-up trigger on INSERT.

Every inserted job is queued (the column's default, and no insert path sets another
status), so the INSERT trigger need not look at the rows: it no longer captures them in a
transition table. In the profile of a single-job insert (one statement, one commit)
the transition table cost ~25 µs of ~255 µs. A statement that inserts nothing (an
unknown queue) now wakes the migrator for nothing, which costs one empty pass.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS jobs_notify_insert ON jobs")
    # hybridq_notify_requeued() (0003) only notifies; one notification per transaction.
    op.execute(
        "CREATE TRIGGER jobs_notify_insert AFTER INSERT ON jobs FOR EACH STATEMENT "
        "EXECUTE FUNCTION hybridq_notify_requeued()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS jobs_notify_insert ON jobs")
    op.execute(
        "CREATE TRIGGER jobs_notify_insert AFTER INSERT ON jobs "
        "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
        "EXECUTE FUNCTION hybridq_notify_queued()"
    )
