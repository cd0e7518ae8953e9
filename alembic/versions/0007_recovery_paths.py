"""Recovery paths: stalls counted apart from attempts, and a random fencing token.

- `stall_count`: how many times a job's lease expired (its worker died or hung). A stall
  returns the job to queued without spending an attempt; MAX_STALLS of them fail it as
  a poison pill.
- `lease_token`: drawn at random by every claim; outcomes apply only while it holds, so
  the fence no longer depends on (worker id, attempt) being unique.

Additive: old processes ignore both columns.

Revision ID: 0007_recovery_paths
Revises: 0006_flow
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007_recovery_paths"
down_revision: str | None = "0006_flow"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "jobs",
        sa.Column("stall_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column("jobs", sa.Column("lease_token", postgresql.UUID(as_uuid=True), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "lease_token")
    op.drop_column("jobs", "stall_count")
