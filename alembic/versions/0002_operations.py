"""Operations: the discarded status, idempotency keys, operator actors, listing indexes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = "'queued', 'migrated_to_redis', 'running', 'completed', 'failed', 'cancelled'"
NEW_STATUSES = OLD_STATUSES + ", 'discarded'"


def upgrade() -> None:
    op.drop_constraint("ck_jobs_status", "jobs", type_="check")
    op.create_check_constraint("ck_jobs_status", "jobs", f"status IN ({NEW_STATUSES})")

    op.add_column("jobs", sa.Column("idempotency_key", sa.Text(), nullable=True))
    op.add_column("jobs", sa.Column("request_hash", sa.Text(), nullable=True))
    op.create_index(
        "uq_jobs_idempotency_key",
        "jobs",
        ["idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.create_index(
        "idx_jobs_dead_letter",
        "jobs",
        ["failed_at", "id"],
        postgresql_where=sa.text("status = 'failed'"),
    )
    op.create_index("idx_jobs_created", "jobs", ["created_at", "id"])
    op.create_index("idx_jobs_queue_created", "jobs", ["queue_name", "created_at", "id"])

    op.add_column("job_logs", sa.Column("actor", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("job_logs", "actor")
    op.drop_index("idx_jobs_queue_created", table_name="jobs")
    op.drop_index("idx_jobs_created", table_name="jobs")
    op.drop_index("idx_jobs_dead_letter", table_name="jobs")
    op.drop_index("uq_jobs_idempotency_key", table_name="jobs")
    op.drop_column("jobs", "request_hash")
    op.drop_column("jobs", "idempotency_key")
    # Discarded jobs have no place in the old schema: they go, with their logs.
    op.execute("DELETE FROM jobs WHERE status = 'discarded'")
    op.drop_constraint("ck_jobs_status", "jobs", type_="check")
    op.create_check_constraint("ck_jobs_status", "jobs", f"status IN ({OLD_STATUSES})")
