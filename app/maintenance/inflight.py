"""In-flight recovery: messages popped from Redis whose job never got an outcome.

A worker's pop records every message in its queue's in-flight set (app.worker.fetch);
the entry goes when the job's outcome is recorded (or at once for a duplicate copy), and
the worker's heartbeat refreshes it while the handler runs. An entry older than
VISIBILITY_TIMEOUT therefore belongs to a worker that died or hung between its pop and
its outcome: its message is pushed back to the head of its list (one Lua script per
queue, atomic), so the job runs again within about VISIBILITY_TIMEOUT plus
MAINTENANCE_INTERVAL, however deep the queue. The claim decides: a copy of a job that is
no longer migrated_to_redis (it ran, or its lease was rescued) is dropped.

A pass costs one ZRANGEBYSCORE per queue plus the expired entries: never a scan of a
list.

The same task drains, once, the lists of the key format before issue 11
(`queue:<name>`, `queue:<name>:high`, `queue:<name>:low`): their messages are moved
atomically into a holding set, then pushed to the lists their content routes them to.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import redis.asyncio as aioredis

from app.cluster import is_cluster, per_shard
from app.db.recovery import RecoveryStore
from app.keys import Keys
from app.settings import Settings

log = logging.getLogger("hybridq.maintenance")

BATCH = 500

# KEYS: high, normal, low, inflight, marker of one queue. ARGV: visibility (ms), limit.
# Pushes the messages of entries older than the visibility back to the head (the popping
# end) of their list and removes the entries. Returns the messages.
RECOVER_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(ARGV[1]),
                           'LIMIT', 0, tonumber(ARGV[2]))
local lists = {h = KEYS[1], n = KEYS[2], l = KEYS[3]}
local out = {}
for _, member in ipairs(expired) do
    local list = lists[string.sub(member, 1, 1)] or KEYS[2]
    local message = string.sub(member, 2)
    redis.call('RPUSH', list, message)
    redis.call('ZREM', KEYS[4], member)
    out[#out + 1] = message
end
if #expired > 0 then redis.call('ZADD', KEYS[5], 0, '1') end
return out
"""

# KEYS: a legacy list, the holding set. ARGV: limit. Moves up to `limit` messages.
LEGACY_TAKE_SCRIPT = """
local msgs = redis.call('RPOP', KEYS[1], tonumber(ARGV[1]))
if not msgs then return 0 end
for _, m in ipairs(msgs) do redis.call('ZADD', KEYS[2], 0, m) end
return #msgs
"""


class InflightRecovery:
    name = "inflight-recovery"

    def __init__(
        self, store: RecoveryStore, redis: aioredis.Redis, keys: Keys, settings: Settings
    ) -> None:
        self.store = store
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self.interval = settings.maintenance_interval
        self._recover = redis.register_script(RECOVER_SCRIPT)
        self._take_legacy = redis.register_script(LEGACY_TAKE_SCRIPT)

    async def run_once(self) -> int:
        queues = await self.store.queue_names()
        if is_cluster(self.redis):  # no cluster ever held the legacy lists
            return await self.recover(queues)
        return await self.recover(queues) + await self.drain_legacy(queues)

    async def _recover_pipeline(self, queues: list[str]) -> list[Any]:
        visibility_ms = max(1, round(self.settings.visibility_timeout * 1000))
        async with self.redis.pipeline(transaction=False) as pipe:
            for q in queues:
                keys = list(self.keys.script_keys(q))
                if is_cluster(self.redis):  # a cluster pipeline sends no SCRIPT LOAD
                    pipe.eval(RECOVER_SCRIPT, len(keys), *keys, visibility_ms, BATCH)
                else:
                    await self._recover(keys=keys, args=[visibility_ms, BATCH], client=pipe)
            return list(await pipe.execute())

    async def _recover_round(self, queues: list[str]) -> list[tuple[str, Any]]:
        """One script call per queue: (queue, messages pushed back). On a Redis Cluster,
        one pipeline per shard; the queues of a shard that fails are skipped."""
        if not is_cluster(self.redis):
            return list(zip(queues, await self._recover_pipeline(queues), strict=True))
        out: list[tuple[str, Any]] = []
        for shard, group, result in await per_shard(
            self.redis, queues, self.keys.inflight, self._recover_pipeline
        ):
            if isinstance(result, BaseException):
                log.warning("in-flight recovery: Redis shard %s failed (%r)", shard, result)
            else:
                out += zip(group, result, strict=True)
        return out

    async def recover(self, queues: list[str]) -> int:
        """Push back the messages of every expired in-flight entry; how many."""
        total = 0
        pending = list(queues)
        while pending:
            results = await self._recover_round(pending)
            again = []
            for q, messages in results:
                total += len(messages)
                if messages:
                    log.warning(
                        "queue %s: %d jobs popped by a worker that stopped before their "
                        "outcome were pushed back: %s",
                        q,
                        len(messages),
                        ", ".join(_ids(messages[:10])),
                    )
                if len(messages) == BATCH:
                    again.append(q)
            pending = again
        return total

    async def drain_legacy(self, queues: list[str]) -> int:
        """Move the messages of pre-issue-11 lists to the current ones; how many."""
        current = {k for q in queues for k in self.keys.queue_lists(q)}
        # A legacy name can equal a current one (queue `{x}`'s old high list is queue
        # `x`'s new one): never drain a current list.
        legacy = sorted({k for q in queues for k in self.keys.legacy_queue_lists(q)} - current)
        holding = self.keys.legacy_drain()
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in legacy:
                pipe.llen(key)
            pipe.zcard(holding)
            lengths = await pipe.execute()
        if not any(lengths):
            return 0
        for key, length in zip(legacy, lengths, strict=False):
            while length > 0:
                length -= await self._take_legacy(keys=[key, holding], args=[BATCH])
        moved = 0
        while True:
            members: list[Any] = await self.redis.zrange(holding, 0, BATCH - 1)
            if not members:
                return moved
            async with self.redis.pipeline(transaction=False) as pipe:
                for message in members:
                    try:
                        data = orjson.loads(message)
                        queue, priority = str(data["queue_name"]), int(data["priority"])
                    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                        log.error("dropping a malformed legacy message: %r", message[:200])
                    else:
                        pipe.lpush(self.keys.route(queue, priority), message)
                        pipe.zadd(self.keys.wake_marker(queue), {"1": 0})
                        moved += 1
                    pipe.zrem(holding, message)
                await pipe.execute()
            log.warning("moved %d messages from legacy Redis lists to the current keys", moved)


def _ids(messages: list[bytes]) -> list[str]:
    ids = []
    for m in messages:
        try:
            ids.append(str(orjson.loads(m)["id"]))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            ids.append("?")
    return ids
