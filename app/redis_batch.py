"""One Redis round trip that carries many small writes in few commands.

Job hashes and metric increments are the bulk of the Redis writes per job (several
commands each). A Batch gathers them and emits, on exit, one EVAL that writes every job
hash with its TTL and adds every metric increment (summed per field), and one ZREM per
in-flight set: a batch of 500 jobs costs a handful of commands instead of thousands,
and redis-py, which packs and parses each command in Python, has little to do.
Everything else (LPUSH, ...) goes straight into the same pipeline.
"""

from __future__ import annotations

import contextlib
from collections import Counter, defaultdict
from collections.abc import AsyncIterator

import orjson
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline
from redis.crc import key_slot

# ARGV[1]: a JSON array of four lists: job hashes as [key, ttl, {field: value}, guard,
# attempt] (ttl 0: leave the TTL alone); HINCRBY and HINCRBYFLOAT as [key, field,
# amount] (amounts as strings, so nothing is rounded); EXPIRE as [key, ttl]. One
# argument rather than thousands: redis-py packs every argument and parses every reply
# in Python, and that was the largest cost of a batch. The keys are not declared in
# KEYS; on a Redis Cluster one EVAL goes to each shard with the hashes it holds (the
# metrics go as plain commands, each routed to its own shard), its first key declared
# (for the routing) and the flag that lets it touch the others.
# `guard` keeps job hashes monotonic when writes from different processes cross (a
# migrator's post-commit write landing after a fast worker's outcome): see GUARD_*.
_WRITE_HASHES = """
local batch = cjson.decode(ARGV[1])
local items = batch[1]
for _, item in ipairs(items) do
    local guard, attempt = item[4] or 0, item[5] or 0
    local apply = true
    if guard > 0 then
        local cur = redis.call('HMGET', item[1], 'status', 'attempt_count')
        local status, n = cur[1], tonumber(cur[2])
        if status and n then
            if n > attempt then
                apply = false
            elseif guard == 1 then
                apply = not (status == 'completed' or status == 'cancelled'
                             or status == 'discarded')
            elseif guard == 2 then
                apply = n < attempt or status == 'migrated_to_redis' or status == 'running'
            end
        end
    end
    if apply then
    local args = {}
    for field, value in pairs(item[3]) do
        args[#args + 1] = field
        args[#args + 1] = value
    end
    redis.call('HSET', item[1], unpack(args))
    if item[2] > 0 then
        redis.call('EXPIRE', item[1], item[2])
    end
    end
end
for _, c in ipairs(batch[2]) do redis.call('HINCRBY', c[1], c[2], c[3]) end
for _, c in ipairs(batch[3]) do redis.call('HINCRBYFLOAT', c[1], c[2], c[3]) end
for _, e in ipairs(batch[4]) do redis.call('EXPIRE', e[1], e[2]) end
return #items
"""

_WRITE_HASHES_CLUSTER = "#!lua flags=allow-cross-slot-keys\n" + _WRITE_HASHES

# Guards of a job-hash write (`attempt`: the write's attempt number):
GUARD_NONE = 0  # always applies (hand-backs, stalls, operator actions)
# migrated_to_redis with `attempt` attempts spent: not over a later attempt's state, nor
# over a terminal one (completed, cancelled, discarded).
GUARD_MIGRATED = 1
# running attempt n: not over a later attempt, nor over attempt n's own outcome.
GUARD_RUNNING = 2
# an attempt's outcome: not over a later attempt's state.
GUARD_OUTCOME = 3

# Hashes per EVAL: bounded so that one script call never holds Redis for long.
_HASHES_PER_EVAL = 1000


class Batch:
    def __init__(self, pipe: Pipeline | ClusterPipeline) -> None:
        self.pipe = pipe
        self._hashes: list[tuple[str, int, dict[str, str], int, int]] = []
        self._ints: Counter[tuple[str, str]] = Counter()
        self._floats: defaultdict[tuple[str, str], float] = defaultdict(float)
        self._expires: dict[str, int] = {}
        self._zrems: dict[str, list[bytes]] = {}

    def hash(
        self, key: str, fields: dict[str, str], ttl: int, guard: int = 0, attempt: int = 0
    ) -> None:
        """HSET `fields` on `key`, then EXPIRE it in `ttl` seconds (0: keep its TTL),
        unless `guard` (GUARD_*) says a later state is already there."""
        self._hashes.append((key, ttl, fields, guard, attempt))

    def hincrby(self, key: str, field: str, amount: int = 1) -> None:
        self._ints[(key, field)] += amount

    def hincrbyfloat(self, key: str, field: str, amount: float) -> None:
        self._floats[(key, field)] += amount

    def zrem(self, key: str, member: bytes) -> None:
        """ZREM `member` from the sorted set `key` (one command per key and batch)."""
        self._zrems.setdefault(key, []).append(member)

    def expire(self, key: str, ttl: int) -> None:
        """EXPIRE `key` in `ttl` seconds, once per batch however often it is asked."""
        self._expires[key] = ttl

    def flush(self) -> None:
        """Add the gathered writes to the pipeline (called on exit of `redis_batch`)."""
        if isinstance(self.pipe, ClusterPipeline):
            self._flush_hashes_by_shard(self.pipe)
            for (key, field), n in self._ints.items():
                if n:
                    self.pipe.hincrby(key, field, n)
            for (key, field), x in self._floats.items():
                self.pipe.hincrbyfloat(key, field, x)
            for key, ttl in self._expires.items():
                self.pipe.expire(key, ttl)
        else:
            hashes = self._hashes
            ints = [(k, f, str(n)) for (k, f), n in self._ints.items() if n]
            floats = [(k, f, repr(x)) for (k, f), x in self._floats.items()]
            expires = list(self._expires.items())
            if hashes or ints or floats or expires:
                # The metrics ride with the first EVAL (the only one, but for huge batches).
                for start in range(0, max(len(hashes), 1), _HASHES_PER_EVAL):
                    chunk = hashes[start : start + _HASHES_PER_EVAL]
                    rest = (ints, floats, expires) if start == 0 else ((), (), ())
                    self.pipe.eval(_WRITE_HASHES, 0, orjson.dumps((chunk, *rest)))
        for key, members in self._zrems.items():
            self.pipe.zrem(key, *members)
        self._hashes = []
        self._ints.clear()
        self._floats.clear()
        self._expires.clear()
        self._zrems.clear()

    def _flush_hashes_by_shard(self, pipe: ClusterPipeline) -> None:
        nodes = pipe.cluster_client.nodes_manager
        by_shard: defaultdict[str, list[tuple[str, int, dict[str, str], int, int]]]
        by_shard = defaultdict(list)
        for item in self._hashes:
            try:
                shard = nodes.get_node_from_slot(key_slot(item[0].encode())).name
            except Exception:  # the slot map is being read again: one EVAL for this key
                shard = item[0]
            by_shard[shard].append(item)
        for items in by_shard.values():
            for start in range(0, len(items), _HASHES_PER_EVAL):
                chunk = items[start : start + _HASHES_PER_EVAL]
                blob = orjson.dumps((chunk, (), (), ()))
                pipe.eval(_WRITE_HASHES_CLUSTER, 1, chunk[0][0], blob)


@contextlib.asynccontextmanager
async def redis_batch(redis: aioredis.Redis) -> AsyncIterator[Batch]:
    """A non-transactional pipeline whose gathered writes go out in one round trip."""
    async with redis.pipeline(transaction=False) as pipe:
        batch = Batch(pipe)
        yield batch
        batch.flush()
        await pipe.execute()
