"""Lease rescue: a running job whose lease expired lost its worker (killed, stalled,
partitioned). Its attempt is failed with "lease expired: worker <id> stopped
responding" and the job is retried by run_at or failed, as after any failed attempt.
The worker, if it ever comes back, cannot record an outcome: its fence no longer holds.
"""

from __future__ import annotations

import logging

from app.backoff import retry_delay
from app.db.recovery import RecoveryStore
from app.settings import Settings

log = logging.getLogger("hybridq.maintenance")

BATCH = 500
MAX_ATTEMPTS = 100  # the API's bound on max_attempts


class LeaseRescue:
    name = "lease-rescue"

    def __init__(self, store: RecoveryStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.interval = settings.maintenance_interval

    async def run_once(self) -> int:
        total = 0
        while True:
            delays = [
                retry_delay(
                    attempt,
                    base=self.settings.backoff_base,
                    cap=self.settings.backoff_max,
                    jitter=self.settings.backoff_jitter,
                )
                for attempt in range(1, MAX_ATTEMPTS + 1)
            ]
            rescued = await self.store.rescue_expired_leases(BATCH, delays)
            for job in rescued:
                log.warning(
                    "job %s attempt %d: %s; now %s", job.id, job.attempt, job.error, job.status
                )
            total += len(rescued)
            if len(rescued) < BATCH:
                return total
