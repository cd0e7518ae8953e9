"""Reconciliation of PostgreSQL with Redis after Redis lost its data (FLUSHALL, a restart
without persistence, a failover to an empty replica), or some of it (a Sentinel failover
to a replica that had not received the last pushes: replication is asynchronous).

The marker key holds the run_id of the server it was written to, and is written only
once every job migrated before the loss is queued again: when a pass finds it missing,
or naming another server than the one answering, it notes PostgreSQL's clock, queues again, in
bounded batches (each a short transaction that skips locked rows), every
migrated_to_redis job last changed before that instant, and only then sets the marker.
If a batch fails (a timeout, a PostgreSQL blip) the marker stays as it was and the next
pass starts over, so the requeue always completes. Several maintenance runners may do it
at once: each batch is conditional. Copies that survived are harmless: a claim wins once.

On a Redis Cluster each queue has its own marker (`queue:{name}:epoch`), in the slot of
its lists: a shard that lost its data has lost the markers of its queues and only those,
so only their jobs are queued again. A shard that does not answer is not taken for one
that lost its data: its queues are looked at again next pass.

(A worker that died between its pop and its claim is handled by the in-flight recovery,
app.maintenance.inflight, without looking at PostgreSQL.)
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime

import redis.asyncio as aioredis

from app.cluster import is_cluster, per_shard
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
        self._cluster = is_cluster(redis)
        self._lost_since: dict[str, datetime] = {}  # Redis Cluster: per queue

    async def run_once(self) -> int:
        if self._cluster:
            return await self.recover_lost_queues()
        return await self.recover_lost_data()

    async def recover_lost_queues(self) -> int:
        """Redis Cluster: queue again the migrated jobs of every queue whose marker is
        gone (its shard lost its data), then set its marker. How many were queued."""
        present = await self._markers_present(await self.store.queue_names())
        for q, ok in present.items():
            if ok:
                self._lost_since.pop(q, None)
        lost = [q for q, ok in present.items() if not ok]
        if not lost:
            return 0
        now = await self.store.now()
        by_since: dict[datetime, list[str]] = {}
        for q in lost:
            by_since.setdefault(self._lost_since.setdefault(q, now), []).append(q)
        requeued = 0
        for since, queues in by_since.items():
            n = await self._requeue(since, queues)
            requeued += n
            # A row a claim held was skipped: leave the markers unset, finish next pass.
            if await self.store.any_migrated_before(since, queues):
                continue
            await self._set_markers(queues)
            if n:
                log.warning(
                    "the Redis shard of queue(s) %s lost its data: %d migrated jobs queued again",
                    ", ".join(queues),
                    n,
                )
        return requeued

    async def _requeue(self, since: datetime, queues: list[str]) -> int:
        requeued = 0
        while True:
            if self.before_batch is not None:
                await self.before_batch()
            n = await self.store.requeue_migrated_before(since, self.batch, queues)
            requeued += n
            if n < self.batch:
                return requeued

    async def _markers_present(self, queues: list[str]) -> dict[str, bool]:
        """Queue -> whether its marker is there; queues of a shard that fails are left out."""

        async def read(group: list[str]) -> list[int]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for q in group:
                    pipe.exists(self.keys.queue_epoch(q))
                return list(await pipe.execute())

        present: dict[str, bool] = {}
        for shard, group, result in await per_shard(
            self.redis, queues, self.keys.queue_epoch, read
        ):
            if isinstance(result, BaseException):
                log.warning("Redis shard %s unreadable (%r); looked at next pass", shard, result)
                continue
            present.update((q, bool(n)) for q, n in zip(group, result, strict=True))
        return present

    async def _set_markers(self, queues: list[str]) -> None:
        async def write(group: list[str]) -> None:
            async with self.redis.pipeline(transaction=False) as pipe:
                for q in group:
                    pipe.set(self.keys.queue_epoch(q), uuid.uuid4().hex)
                await pipe.execute()

        for _shard, group, result in await per_shard(
            self.redis, queues, self.keys.queue_epoch, write
        ):
            if isinstance(result, BaseException):  # requeued again next pass: harmless
                log.warning("could not mark queue(s) %s requeued: %r", group, result)
            else:
                for q in group:
                    self._lost_since.pop(q, None)

    async def recover_lost_data(self) -> int:
        """If the marker is gone, Redis lost its data; if it names another server than
        the one answering now, the server changed (a Sentinel failover to a replica, or
        a restart from a snapshot), and the writes it had not passed on are lost. Either
        way: queue every migrated job again, then set the marker to this server's run_id.
        Returns how many jobs were queued again."""
        marker = self.keys.epoch_marker()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(marker)
            pipe.info("server")
            value, info = await pipe.execute(raise_on_error=False)
        if isinstance(value, Exception):
            raise value
        # INFO may be disabled (some managed services): then only a lost marker counts.
        server = str(info.get("run_id", "")) if isinstance(info, dict) else ""
        seen = value.decode() if isinstance(value, bytes) else None
        if seen is not None and (not server or seen == server or not _is_run_id(seen)):
            if server and seen != server:
                await self.redis.set(marker, server)  # a marker of an earlier version
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
        # A row a claim held was skipped: leave the marker as it is and finish next pass.
        if await self.store.any_migrated_before(since):
            return requeued
        await self.redis.set(marker, server or uuid.uuid4().hex)
        self._since = None
        if requeued and seen is None:
            log.warning(
                "Redis has lost its data (no %s marker): %d migrated jobs queued again",
                marker,
                requeued,
            )
        elif requeued:
            log.warning(
                "the Redis server changed (run_id %s, then %s: a failover or a restart); "
                "what it had not passed on is lost: %d migrated jobs queued again",
                seen,
                server,
                requeued,
            )
        return requeued


def _is_run_id(value: str) -> bool:
    """A Redis run_id (40 hex digits); markers written before it was kept are not."""
    return len(value) == 40 and all(c in "0123456789abcdef" for c in value)
