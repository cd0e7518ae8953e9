"""Retention: old terminal jobs are deleted in bounded batches."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from app.db.counts import fold

# A bounded batch of terminal jobs whose last change (updated_at: when they became
# terminal) is older than the cut-off; their job_logs go with them (ON DELETE CASCADE).
# Served by idx_jobs_finished (updated_at, of terminal jobs only).
# Only terminal jobs, whatever statuses the caller names: a live job is never deleted.
DELETE_OLD_JOBS = """
DELETE FROM jobs WHERE id IN (
    SELECT id FROM jobs
    WHERE status = ANY($1::text[])
      AND status IN ('completed', 'cancelled', 'failed', 'discarded')
      AND updated_at < now() - make_interval(secs => $2::float8)
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
"""

DATABASE_NOW = "SELECT clock_timestamp()"


class RetentionStore:
    """Deletes of old jobs over a pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def delete_old_jobs(self, statuses: Sequence[str], older_than: float, limit: int) -> int:
        """Delete one bounded batch; returns how many jobs went."""
        result = await self.pool.execute(DELETE_OLD_JOBS, list(statuses), older_than, limit)
        return int(result.split()[-1])

    async def fold_job_counts(self) -> None:
        """Fold the count changes of finished jobs (app.db.counts), so they stay few
        even when no one reads the counts."""
        async with self.pool.acquire() as conn:
            await fold(conn)

    async def database_now(self) -> datetime:
        """PostgreSQL's clock (the one failed_at and created_at are written with)."""
        now: datetime = await self.pool.fetchval(DATABASE_NOW)
        return now
