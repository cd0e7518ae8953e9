"""Time and flow (issue 14): snoozes counted per job.

Additive only: old processes keep working against this schema (the new column has a
default and nothing old reads it).

Revision ID: 0005_flow
Revises: 0004
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_flow"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # How many times a handler snoozed the job (bounded by MAX_SNOOZES).
    op.add_column(
        "jobs",
        sa.Column("snooze_count", sa.Integer(), nullable=False, server_default=sa.text("0")),
    )


def downgrade() -> None:
    op.drop_column("jobs", "snooze_count")
