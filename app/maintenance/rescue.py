"""Lease rescue: a running job whose lease expired lost its worker (killed, hung,
partitioned). That is a stall, not a failed attempt: the job goes back to queued with
its attempt not spent, due at a random time within STALL_REQUEUE_SPREAD (drawn per job,
so the jobs one dead worker held do not come back together and die together again). A
job that stalls MAX_STALLS times is failed as a poison pill ("stalled N times"): it is
the likely cause (a segfault, an OOM). The worker, if it ever comes back, cannot record
an outcome: its fence no longer holds.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis

from app.db.recovery import RecoveryStore
from app.db.rows import RescuedJob
from app.job_state import JobStateCache
from app.keys import Keys
from app.redis_batch import redis_batch
from app.settings import Settings

log = logging.getLogger("hybridq.maintenance")

BATCH = 500


class LeaseRescue:
    name = "lease-rescue"

    def __init__(
        self,
        store: RecoveryStore,
        settings: Settings,
        redis: aioredis.Redis | None = None,
        keys: Keys | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.redis = redis
        self.state = JobStateCache(keys, settings.job_hash_ttl) if keys is not None else None
        self.interval = settings.maintenance_interval

    async def run_once(self) -> int:
        total = 0
        while True:
            rescued = await self.store.rescue_expired_leases(
                BATCH, self.settings.max_stalls, self.settings.stall_requeue_spread
            )
            for job in rescued:
                log.warning(
                    "job %s attempt %d: %s; now %s", job.id, job.attempt, job.error, job.status
                )
            await self._update_cache(rescued)
            total += len(rescued)
            if len(rescued) < BATCH:
                return total

    async def _update_cache(self, rescued: list[RescuedJob]) -> None:
        if not rescued or self.redis is None or self.state is None:
            return
        try:
            async with redis_batch(self.redis) as pipe:
                for job in rescued:
                    if job.status == "failed":
                        self.state.failed_attempt(pipe, job.id, "failed", job.error, job.attempt)
                    else:
                        self.state.requeued(pipe, job.id, job.attempt - 1)
        except Exception:
            log.warning("could not update job hashes in Redis", exc_info=True)
