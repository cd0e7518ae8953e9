"""Reliable, fair, priority-ordered pops: every popped message leaves a trace.

One Lua script pops up to `count` messages across the served queues, high before normal
before low, and records each in its queue's in-flight sorted set (scored by the Redis
clock) in the same atomic step, so a worker that dies between its pop and its claim
loses nothing: maintenance pushes the message back once its entry is older than
VISIBILITY_TIMEOUT (app.maintenance.inflight). The entry is removed when the job's
outcome is recorded, or at once when the claim shows the copy is a duplicate; while the
handler runs, the heartbeat refreshes its score.

Fairness: at each priority level the script takes an equal share from every queue that
has jobs, starting from a queue that rotates with each pop, so no queue's backlog
starves another's at the same level.

Waiting: when nothing is there, an idle worker blocks on the queues' wake-up markers
(BZPOPMIN), which the migrator sets with every push and the pop script sets again while
jobs remain (a baton, as BullMQ's marker). The pop script is pipelined behind the
BZPOPMIN on the same connection, so Redis runs it the moment the wait ends: a wake-up
costs one round trip, as a plain BLMPOP would. A marker lost to a crash costs at most
one WORKER_FETCH_TIMEOUT: the wait ends and the script runs anyway.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from app.keys import Keys

log = logging.getLogger("hybridq.worker")

# KEYS: per queue, its Keys.script_keys (5 each: high, normal, low, inflight, marker).
# ARGV: count, first queue (0-based rotation), number of queues. Returns a flat list:
# queue index, member, ... A member is the level code (h, n, l) followed by the message.
POP_SCRIPT = """
local count = tonumber(ARGV[1])
local offset = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local codes = {'h', 'n', 'l'}
local out = {}
for level = 1, 3 do
    if count <= 0 then break end
    local active = {}
    for j = 0, n - 1 do
        local q = (offset + j) % n
        if redis.call('LLEN', KEYS[q * 5 + level]) > 0 then active[#active + 1] = q end
    end
    while count > 0 and #active > 0 do
        local share = math.max(1, math.floor(count / #active))
        local still = {}
        for _, q in ipairs(active) do
            if count <= 0 then break end
            local take = math.min(share, count)
            local msgs = redis.call('RPOP', KEYS[q * 5 + level], take)
            if msgs then
                for _, m in ipairs(msgs) do
                    local member = codes[level] .. m
                    redis.call('ZADD', KEYS[q * 5 + 4], now, member)
                    out[#out + 1] = q
                    out[#out + 1] = member
                end
                count = count - #msgs
                if #msgs == take then still[#still + 1] = q end
            end
        end
        active = still
    end
end
for q = 0, n - 1 do
    local b = q * 5
    if redis.call('LLEN', KEYS[b + 1]) > 0 or redis.call('LLEN', KEYS[b + 2]) > 0
            or redis.call('LLEN', KEYS[b + 3]) > 0 then
        redis.call('ZADD', KEYS[b + 5], 0, '1')
    end
end
return out
"""

# KEYS[1]: a queue's inflight set; ARGV: members whose jobs still run. Refreshes their
# score (only those still present: XX) to the Redis clock.
TOUCH_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = 0
for _, member in ipairs(ARGV) do
    n = n + redis.call('ZADD', KEYS[1], 'XX', 'CH', now, member)
end
return n
"""


def parse_message(raw: bytes) -> dict[str, Any] | None:
    """A popped message with the fields a job needs, or None if it is malformed."""
    try:
        data: dict[str, Any] = orjson.loads(raw)
        data["id"] = uuid.UUID(str(data["id"]))
    except (orjson.JSONDecodeError, KeyError, ValueError, TypeError, AttributeError):
        return None
    if not (
        isinstance(data.get("queue_name"), str)
        and isinstance(data.get("payload"), dict)
        and isinstance(data.get("priority"), int)
    ):
        return None
    return data


@dataclass(frozen=True, slots=True)
class Popped:
    """One popped message and its in-flight entry."""

    queue: str  # the served queue it was popped from (its in-flight set)
    member: bytes  # the entry in that set
    message: bytes  # the job message (the member without its level code)


def sort_popped(
    popped: Sequence[Popped],
) -> tuple[dict[uuid.UUID, dict[str, Any]], dict[uuid.UUID, Popped], list[Popped]]:
    """The messages of a pop by job id, the in-flight entry to keep for each, and the
    entries to drop: malformed messages, and all but one copy of a job popped twice."""
    by_id: dict[uuid.UUID, dict[str, Any]] = {}
    entry_of: dict[uuid.UUID, Popped] = {}
    dropped: list[Popped] = []
    for p in popped:
        data = parse_message(p.message)
        if data is None:
            log.error("dropping malformed message from Redis: %r", p.message[:200])
            dropped.append(p)
            continue
        earlier = entry_of.get(data["id"])
        if earlier is not None and earlier.member != p.member:
            dropped.append(earlier)  # two copies in one pop: one is claimed
        by_id[data["id"]] = data
        entry_of[data["id"]] = p
    return by_id, entry_of, dropped


class Fetcher:
    """Pops for one worker from a fixed set of queues."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        queues: Sequence[str],
        rng: random.Random | None = None,
    ) -> None:
        if not queues:
            raise ValueError("a fetcher needs at least one queue")
        self.redis = redis
        self.keys = keys
        self.queues = list(queues)
        self._script_keys = [key for q in self.queues for key in keys.script_keys(q)]
        self._markers = [keys.wake_marker(q) for q in self.queues]
        self._pop = redis.register_script(POP_SCRIPT)
        self._touch = redis.register_script(TOUCH_SCRIPT)
        # Workers start at different queues; each pop moves the start by one.
        self._next = (rng or random.Random()).randrange(len(self.queues))

    def _offset(self) -> int:
        offset = self._next
        self._next = (self._next + 1) % len(self.queues)
        return offset

    async def pop(self, count: int) -> list[Popped]:
        """Up to `count` messages, recorded in flight; [] when every list is empty."""
        result: Any = await self._pop(
            keys=self._script_keys, args=[count, self._offset(), len(self.queues)]
        )
        return self._parse(result)

    async def wait_and_pop(self, count: int, timeout: float) -> list[Popped]:
        """Block until a served queue's marker says jobs were pushed (or `timeout`), then
        pop as `pop` does, in one round trip."""
        args = [count, self._offset(), len(self.queues)]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.bzpopmin(self._markers, timeout=timeout)
            # evalsha, not the registered script: a pipeline would check SCRIPT EXISTS
            # first, one more round trip. `pop` loaded the script before any wait.
            pipe.evalsha(self._pop.sha, len(self._script_keys), *self._script_keys, *args)
            try:
                _marker, result = await pipe.execute()
            except NoScriptError:  # Redis restarted and forgot it: `pop` loads it again
                return []
        return self._parse(result)

    def _parse(self, result: Any) -> list[Popped]:
        popped = []
        for i in range(0, len(result), 2):
            member = bytes(result[i + 1])
            popped.append(Popped(self.queues[int(result[i])], member, member[1:]))
        return popped

    def forget(self, pipe: Any, entries: Sequence[Popped]) -> None:
        """Queue the removal of these in-flight entries on a pipeline."""
        by_queue: dict[str, list[bytes]] = {}
        for e in entries:
            by_queue.setdefault(e.queue, []).append(e.member)
        for queue, members in by_queue.items():
            pipe.zrem(self.keys.inflight(queue), *members)

    async def forget_now(self, entries: Sequence[Popped]) -> None:
        """Remove these in-flight entries now; a failure only costs a harmless push-back
        of copies the claim will drop."""
        if not entries:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                self.forget(pipe, entries)
                await pipe.execute()
        except Exception as exc:
            log.warning("could not remove %d in-flight entries: %s", len(entries), exc)

    async def touch(self, entries: Sequence[Popped]) -> None:
        """Refresh the in-flight entries of jobs that still run (one call per queue)."""
        by_queue: dict[str, list[bytes]] = {}
        for e in entries:
            by_queue.setdefault(e.queue, []).append(e.member)
        if not by_queue:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for queue, members in by_queue.items():
                await self._touch(keys=[self.keys.inflight(queue)], args=members, client=pipe)
            await pipe.execute()
