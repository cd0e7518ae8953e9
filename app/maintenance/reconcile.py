"""Reconciliation of PostgreSQL with Redis, for the two ways a job can vanish from Redis.

1. Redis lost its data (FLUSHALL, a restart without persistence, a failover to an empty
   replica). The migrators keep a marker key; when a pass finds it missing, it is set
   again (SET NX: one migrator wins) and every migrated_to_redis job goes back to queued,
   to be pushed again at once. Copies that survived are harmless: a claim wins once.
2. A worker died between its pop and its claim. A job migrated longer ago than
   STALE_MIGRATED_AFTER and found in no Redis list (LPOS of its exact message) goes back
   to queued. One still waiting in a deep list is left alone.
"""

from __future__ import annotations

import logging
import uuid

import redis.asyncio as aioredis

from app.db.recovery import RecoveryStore
from app.keys import Keys
from app.settings import Settings

log = logging.getLogger("hybridq.maintenance")

BATCH = 500


class RedisReconciler:
    name = "redis-reconcile"

    def __init__(
        self, store: RecoveryStore, redis: aioredis.Redis, keys: Keys, settings: Settings
    ) -> None:
        self.store = store
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self.interval = settings.maintenance_interval

    async def run_once(self) -> int:
        return await self.recover_lost_data() + await self.requeue_unclaimed()

    async def recover_lost_data(self) -> int:
        """If the marker is gone, Redis lost its data: queue every migrated job again."""
        created = await self.redis.set(self.keys.epoch_marker(), uuid.uuid4().hex, nx=True)
        if not created:
            return 0
        requeued = await self.store.requeue_all_migrated()
        if requeued:
            log.warning(
                "Redis has lost its data (no %s marker): %d migrated jobs queued again",
                self.keys.epoch_marker(),
                requeued,
            )
        return requeued

    async def requeue_unclaimed(self) -> int:
        """Queue again jobs popped from Redis but never claimed."""
        stale = await self.store.stale_migrated(self.settings.stale_migrated_after, BATCH)
        if not stale:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for job in stale:
                pipe.lpos(self.keys.route(job.queue_name, job.priority), job.message)
            positions = await pipe.execute()
        lost = [job for job, pos in zip(stale, positions, strict=True) if pos is None]
        requeued = await self.store.requeue_migrated(lost)
        if requeued:
            log.warning(
                "%d jobs were popped from Redis but never claimed: queued again", len(requeued)
            )
        return len(requeued)
