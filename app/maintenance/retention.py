"""Retention: deletes old terminal jobs (their job_logs go with them, ON DELETE CASCADE)
in bounded batches, and forgets workers that stopped beating long ago.

Completed and cancelled jobs go RETENTION_COMPLETED seconds after they became terminal;
failed and discarded ones after RETENTION_FAILED. "Became terminal" is updated_at, the
time of a job's last transition. Each batch is its own short transaction with SKIP
LOCKED, so several maintenance runners can work at once and none blocks a worker.
"""

from __future__ import annotations

import logging
import time

import redis.asyncio as aioredis

from app.db.retention import RetentionStore
from app.keys import Keys
from app.settings import Settings

log = logging.getLogger("hybridq.maintenance")

# A pass stops after this many batches per rule, so one pass stays short; the next pass
# (RETENTION_INTERVAL later) goes on.
MAX_BATCHES_PER_PASS = 100
# Entries of the workers index without a heartbeat for this long are dropped.
STALE_WORKER_AGE = 86_400.0


class Retention:
    name = "retention"

    def __init__(
        self, *, store: RetentionStore, redis: aioredis.Redis, keys: Keys, settings: Settings
    ) -> None:
        self.store = store
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self.interval = settings.retention_interval

    @property
    def rules(self) -> list[tuple[tuple[str, ...], float]]:
        return [
            (("completed", "cancelled"), float(self.settings.retention_completed)),
            (("failed", "discarded"), float(self.settings.retention_failed)),
        ]

    async def run_once(self) -> int:
        """One pass: delete expired jobs batch by batch; returns how many went."""
        batch = self.settings.retention_batch_size
        deleted = 0
        for statuses, age in self.rules:
            for _ in range(MAX_BATCHES_PER_PASS):
                n = await self.store.delete_old_jobs(statuses, age, batch)
                deleted += n
                if n < batch:
                    break
        await self.store.fold_job_counts()
        try:
            await self.redis.zremrangebyscore(
                self.keys.workers_index(), "-inf", time.time() - STALE_WORKER_AGE
            )
        except Exception as exc:
            log.warning("could not prune the workers index: %s", exc)
        return deleted
