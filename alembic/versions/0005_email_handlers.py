"""The seed's jobs for real (app.handlers): suppressions, email events, aggregates.

Additive only: new tables, nothing existing changes, so workers of the previous release
keep running against this schema.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)
NOW = sa.text("now()")
ZERO = sa.text("0")
UUID = postgresql.UUID(as_uuid=True)
COUNTERS = ("sent", "deferred", "failed", "bounced", "soft_bounced", "suppressed")


def _counters() -> list[sa.Column[int]]:
    return [sa.Column(name, sa.Integer(), server_default=ZERO, nullable=False) for name in COUNTERS]


def upgrade() -> None:
    op.create_table(
        "suppressions",
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("source", sa.String(50), nullable=False),
        sa.Column("job_id", UUID, nullable=True),
        sa.Column("created_at", TZ, server_default=NOW, nullable=False),
        sa.CheckConstraint("address = lower(address)", name="ck_suppressions_address_lowercase"),
        sa.PrimaryKeyConstraint("address", name="pk_suppressions"),
    )
    op.create_table(
        "email_events",
        sa.Column("id", UUID, server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("event", sa.String(20), nullable=False),
        sa.Column("dedupe_key", sa.Text(), nullable=False),
        sa.Column("job_id", UUID, nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("campaign_id", sa.Text(), nullable=True),
        sa.Column("account_id", sa.Text(), nullable=True),
        sa.Column("bounce_type", sa.String(10), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("occurred_at", TZ, server_default=NOW, nullable=False),
        sa.CheckConstraint(
            "event IN ('sent', 'deferred', 'failed', 'suppressed', 'bounced')",
            name="ck_email_events_event",
        ),
        sa.CheckConstraint(
            "bounce_type IS NULL OR bounce_type IN ('hard', 'soft')",
            name="ck_email_events_bounce_type",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_email_events"),
        sa.UniqueConstraint("dedupe_key", name="uq_email_events_dedupe_key"),
    )
    op.create_index("idx_email_events_occurred", "email_events", ["occurred_at"])
    op.create_index("idx_email_events_campaign", "email_events", ["campaign_id", "occurred_at"])
    op.create_table(
        "email_daily_stats",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("campaign_id", sa.Text(), nullable=False),
        *_counters(),
        sa.Column("computed_at", TZ, server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("day", "campaign_id", name="pk_email_daily_stats"),
    )
    op.create_table(
        "email_campaign_stats",
        sa.Column("campaign_id", sa.Text(), nullable=False),
        *_counters(),
        sa.Column("first_event_at", TZ, nullable=True),
        sa.Column("last_event_at", TZ, nullable=True),
        sa.Column("computed_at", TZ, server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", name="pk_email_campaign_stats"),
    )
    op.create_table(
        "billing_usage",
        sa.Column("account_id", sa.Text(), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("messages_sent", sa.Integer(), nullable=False),
        sa.Column("computed_at", TZ, server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("account_id", "month", name="pk_billing_usage"),
    )


def downgrade() -> None:
    for table in (
        "billing_usage",
        "email_campaign_stats",
        "email_daily_stats",
        "email_events",
        "suppressions",
    ):
        op.drop_table(table)
