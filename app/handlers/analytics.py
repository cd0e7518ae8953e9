"""Analytics runs (`analytics:daily-aggregate`, `analytics:campaign-aggregate`,
`analytics:billing-calculate`), computed from the email events and tracked in the seed's
analytics_jobs table: one row per job (id = the job id), `processing` while an attempt
runs (queued_at: when the job was created), then `completed` with processed_at, or
`failed` with error_message (a retry sets it back to `processing`).

- daily: per campaign and UTC day, counts of sent / deferred / failed / bounced (hard) /
  soft-bounced / suppressed events -> email_daily_stats (campaign_id '' = no campaign).
- campaign: the same counts per campaign over its whole life -> email_campaign_stats.
- billing: per account and calendar month (UTC), messages sent -> billing_usage.

Each replaces the rows of its period, so running it again gives the same rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import asyncpg

from app.handlers import analytics_sql as sql
from app.handlers.payloads import (
    BillingPayload,
    CampaignAggregatePayload,
    DailyAggregatePayload,
    parse,
)
from app.registry import Job

log = logging.getLogger("hybridq.handlers.analytics")

DAILY = "analytics:daily-aggregate"
CAMPAIGN = "analytics:campaign-aggregate"
BILLING = "analytics:billing-calculate"


def _rows(status: str) -> int:
    """The row count of an INSERT's status tag (`INSERT 0 12`)."""
    return int(status.rsplit(" ", 1)[-1])


def previous_month(today: date) -> date:
    """The first day of the month before `today`'s."""
    return (today.replace(day=1) - timedelta(days=1)).replace(day=1)


class AnalyticsRunner:
    """Runs the three analytics jobs on a pool; `today` is the clock of the defaults."""

    def __init__(
        self, pool: asyncpg.Pool, today: Callable[[], date] = lambda: datetime.now(UTC).date()
    ) -> None:
        self.pool = pool
        self.today = today

    async def run(self, job: Job) -> str:
        """Compute what the job asks for, tracked in analytics_jobs; a summary of it."""
        await self.pool.execute(sql.RUN_STARTED, job.id, job.queue_name, job.payload, job.priority)
        try:
            summary = await self._compute(job)
        except Exception as exc:
            await self.pool.execute(sql.RUN_FAILED, job.id, f"{type(exc).__name__}: {exc}")
            raise
        await self.pool.execute(sql.RUN_COMPLETED, job.id)
        log.info("%s: %s", job.queue_name, summary)
        return summary

    async def _compute(self, job: Job) -> str:
        if job.queue_name == DAILY:
            day = parse(DailyAggregatePayload, job.payload).day
            day = day or self.today() - timedelta(days=1)
            return f"{await self.daily(day)} campaign rows for {day}"
        if job.queue_name == CAMPAIGN:
            campaign = parse(CampaignAggregatePayload, job.payload).campaign_id
            rows = await self.campaigns(campaign)
            return f"{rows} campaign rows ({campaign or 'every campaign'})"
        if job.queue_name == BILLING:
            p = parse(BillingPayload, job.payload)
            month = date.fromisoformat(f"{p.month}-01") if p.month else previous_month(self.today())
            rows = await self.billing(month, p.account_id)
            return f"{rows} account rows for {month:%Y-%m}"
        raise ValueError(f"not an analytics queue: {job.queue_name!r}")

    async def _replace(self, lock: str, delete: str, insert: str, *args: object) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(sql.LOCK_PERIOD, lock)
            await conn.execute(delete, *args)
            return _rows(await conn.execute(insert, *args))

    async def daily(self, day: date) -> int:
        """Recompute the daily rows of `day` (UTC); the number of campaign rows."""
        return await self._replace(
            f"analytics:daily:{day}", sql.DELETE_DAILY, sql.INSERT_DAILY, day
        )

    async def campaigns(self, campaign_id: str | None) -> int:
        """Recompute one campaign's totals, or every campaign's (None)."""
        # One lock for all: a run for every campaign overlaps each single one.
        return await self._replace(
            "analytics:campaigns", sql.DELETE_CAMPAIGNS, sql.INSERT_CAMPAIGNS, campaign_id
        )

    async def billing(self, month: date, account_id: str | None) -> int:
        """Recompute the messages sent per account in the month starting `month`."""
        return await self._replace(
            f"analytics:billing:{month}", sql.DELETE_BILLING, sql.INSERT_BILLING, month, account_id
        )
