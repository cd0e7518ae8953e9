"""Reconciliation of PostgreSQL with Redis after Redis lost its data (FLUSHALL, a restart
without persistence, a failover to an empty replica).

The marker key is written only once every job migrated before the loss is queued
again: when a pass finds it missing, it notes PostgreSQL's clock, queues again, in
bounded batches (each a short transaction that skips locked rows), every
migrated_to_redis job last changed before that instant, and only then sets the marker.
If a batch fails (a timeout, a PostgreSQL blip) the marker stays missing and the next
pass starts over, so the requeue always completes. Several maintenance runners may do it
at once: each batch is conditional. Copies that survived are harmless: a claim wins once.

(A worker that died between its pop and its claim is handled by the in-flight recovery,
app.maintenance.inflight, without looking at PostgreSQL.)
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime

import redis.asyncio as aioredis

from app.db.recovery import RecoveryStore
from app.keys import Keys
from app.settings import Settings

log = logging.getLogger("hybridq.maintenance")

BATCH = 1000


class RedisReconciler:
    name = "redis-reconcile"

    def __init__(
        self,
        store: RecoveryStore,
        redis: aioredis.Redis,
        keys: Keys,
        settings: Settings,
        batch: int = BATCH,
    ) -> None:
        self.store = store
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self.interval = settings.maintenance_interval
        self.batch = batch
        # Test hook: awaited before each requeue batch (fault injection). None in service.
        self.before_batch: Callable[[], Awaitable[None]] | None = None
        self._since: datetime | None = None  # when the loss was seen, until requeued

    async def run_once(self) -> int:
        return await self.recover_lost_data()

    async def recover_lost_data(self) -> int:
        """If the marker is gone, Redis lost its data: queue every migrated job again,
        then set the marker. Returns how many jobs were queued again."""
        if await self.redis.exists(self.keys.epoch_marker()):
            self._since = None
            return 0
        if self._since is None:
            self._since = await self.store.now()
        since = self._since
        requeued = 0
        while True:
            if self.before_batch is not None:
                await self.before_batch()
            n = await self.store.requeue_migrated_before(since, self.batch)
            requeued += n
            if n < self.batch:
                break
        # A row a claim held was skipped: leave the marker unset and finish next pass.
        if await self.store.any_migrated_before(since):
            return requeued
        await self.redis.set(self.keys.epoch_marker(), uuid.uuid4().hex)
        self._since = None
        if requeued:
            log.warning(
                "Redis has lost its data (no %s marker): %d migrated jobs queued again",
                self.keys.epoch_marker(),
                requeued,
            )
        return requeued
