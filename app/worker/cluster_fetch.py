"""Pops on a Redis Cluster: the same pop script (app.worker.fetch), once per group of
served queues that share a hash slot (in practice one queue per group: each queue's
keys carry its own hash tag), the groups called concurrently.

Fairness: the free slots are split in equal shares over the groups, starting from one
that rotates with each pop; what a group could not fill (it ran dry) is offered again to
the groups that filled their share, so a busy queue on one shard never waits for an
idle one on another, and none is starved. Priorities stay strict within each queue (the
script), not across queues on different shards.

Waiting: one blocking wait (BZPOPMIN on the group's markers) per group, concurrently;
the first that ends (a push, or the timeout) ends the others, and a pop over every group
follows: it sets again the marker of any queue whose jobs remain, so a marker taken by
a wait that was cut short is restored. With a single group the wait and the pop go in
one round trip, as on a single server.

A group whose shard fails (down, unreachable) is left out for SHARD_RETRY seconds: the
other groups keep being served; an error is raised only when every group failed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from app.cluster import is_cluster, slot_of
from app.keys import Keys
from app.worker.fetch import POP_SCRIPT, Fetcher, Popped

log = logging.getLogger("hybridq.worker")

# Seconds a group whose shard failed is left out before it is tried again.
SHARD_RETRY = 1.0


@dataclass(slots=True)
class SlotGroup:
    """Served queues whose keys share one hash slot."""

    queues: list[str]
    script_keys: list[str]
    markers: list[str]
    next: int = 0  # rotation inside the group (the script's offset)
    down_until: float = 0.0
    error: str | None = field(default=None)

    def offset(self) -> int:
        offset = self.next
        self.next = (self.next + 1) % len(self.queues)
        return offset


def slot_groups(keys: Keys, queues: Sequence[str]) -> list[SlotGroup]:
    """The served queues grouped by the hash slot of their keys, in the order given."""
    by_slot: dict[int, list[str]] = {}
    for q in queues:
        by_slot.setdefault(slot_of(keys.wake_marker(q)), []).append(q)
    return [
        SlotGroup(
            queues=qs,
            script_keys=[k for q in qs for k in keys.script_keys(q)],
            markers=[keys.wake_marker(q) for q in qs],
        )
        for qs in by_slot.values()
    ]


def split(count: int, parts: int) -> list[int]:
    """`count` in `parts` shares as equal as can be, the larger ones first."""
    base, extra = divmod(count, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


class ClusterFetcher(Fetcher):
    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        queues: Sequence[str],
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(redis, keys, queues, rng)
        self.groups = slot_groups(keys, self.queues)
        self._rotation = (rng or random.Random()).randrange(len(self.groups))

    def _live(self) -> list[SlotGroup]:
        """The groups not left out, from the one whose turn it is."""
        n = len(self.groups)
        start, self._rotation = self._rotation, (self._rotation + 1) % n
        now = time.monotonic()
        ordered = [self.groups[(start + i) % n] for i in range(n)]
        return [g for g in ordered if g.down_until <= now]

    def _failed(self, group: SlotGroup, exc: BaseException) -> None:
        if group.error is None:
            log.warning(
                "queue(s) %s: their Redis shard failed (%r); serving the others, trying "
                "again every %.0fs",
                ", ".join(group.queues),
                exc,
                SHARD_RETRY,
            )
        group.error = repr(exc)
        group.down_until = time.monotonic() + SHARD_RETRY

    def _ok(self, group: SlotGroup) -> None:
        if group.error is not None:
            log.warning("queue(s) %s: their Redis shard answers again", ", ".join(group.queues))
            group.error = None
        group.down_until = 0.0

    async def _pop_group(self, group: SlotGroup, count: int) -> list[Popped]:
        result: Any = await self._pop(
            keys=group.script_keys, args=[count, group.offset(), len(group.queues)]
        )
        return self._parse_group(group, result)

    def _parse_group(self, group: SlotGroup, result: Any) -> list[Popped]:
        popped = []
        for i in range(0, len(result), 2):
            member = bytes(result[i + 1])
            popped.append(Popped(group.queues[int(result[i])], member, member[1:]))
        return popped

    async def pop(self, count: int) -> list[Popped]:
        return await self._pop_from(self._live(), count)

    async def _pop_from(self, groups: list[SlotGroup], count: int) -> list[Popped]:
        if not groups:
            raise ConnectionError("the Redis shards of every served queue failed; retrying")
        out: list[Popped] = []
        candidates = groups
        failures: list[BaseException] = []
        while count > 0 and candidates:
            shares = split(count, len(candidates))
            asked = [(g, s) for g, s in zip(candidates, shares, strict=True) if s > 0]
            rest = candidates[len(asked) :]
            results = await asyncio.gather(
                *(self._pop_group(g, s) for g, s in asked), return_exceptions=True
            )
            again = []
            for (group, share), result in zip(asked, results, strict=True):
                if isinstance(result, BaseException):
                    self._failed(group, result)
                    failures.append(result)
                    continue
                self._ok(group)
                out += result
                count -= len(result)
                if len(result) >= share:
                    again.append(group)
            candidates = again + rest
        if not out and failures and len(failures) == len(groups):
            raise failures[0]
        return out

    async def wait_and_pop(self, count: int, timeout: float) -> list[Popped]:
        groups = self._live()
        if len(groups) == 1 and len(self.groups) == 1:
            return await self._wait_one(groups[0], count, timeout)
        if not groups:
            raise ConnectionError("the Redis shards of every served queue failed; retrying")
        waits = {
            asyncio.create_task(self.redis.bzpopmin(g.markers, timeout=timeout)): g for g in groups
        }
        try:
            done, _pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when this wait is cancelled: no wait outlives it
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        for task in done:
            exc = None if task.cancelled() else task.exception()
            if exc is not None:
                self._failed(waits[task], exc)
        now = time.monotonic()
        return await self._pop_from([g for g in groups if g.down_until <= now], count)

    async def _wait_one(self, group: SlotGroup, count: int, timeout: float) -> list[Popped]:
        """The wait and the pop of one group in one round trip (one slot: one shard).
        The script goes whole: a cluster pipeline refuses EVALSHA."""
        args = [count, group.offset(), len(group.queues)]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.bzpopmin(group.markers, timeout=timeout)
            pipe.eval(POP_SCRIPT, len(group.script_keys), *group.script_keys, *args)
            _marker, result = await pipe.execute()
        return self._parse_group(group, result)

    async def touch(self, entries: Sequence[Popped]) -> None:
        """Refresh in-flight entries, one call per queue, concurrently; a queue whose
        shard fails is skipped (its entries may be pushed back: a harmless copy)."""
        by_queue: dict[str, list[bytes]] = {}
        for e in entries:
            by_queue.setdefault(e.queue, []).append(e.member)
        results = await asyncio.gather(
            *(
                self._touch(keys=[self.keys.inflight(q)], args=members)
                for q, members in by_queue.items()
            ),
            return_exceptions=True,
        )
        for q, result in zip(by_queue, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("could not refresh in-flight entries of queue %s: %r", q, result)


def make_fetcher(redis: aioredis.Redis, keys: Keys, queues: Sequence[str]) -> Fetcher:
    """The fetcher for this client: ClusterFetcher on a Redis Cluster."""
    return (
        ClusterFetcher(redis, keys, queues) if is_cluster(redis) else Fetcher(redis, keys, queues)
    )
