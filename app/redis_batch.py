"""One Redis round trip that carries many small writes in few commands.

Job hashes and metric increments are the bulk of the Redis writes per job (several
commands each). A Batch gathers them and emits, on exit, one EVAL that writes every job
hash with its TTL, and one HINCRBY (or HINCRBYFLOAT) per distinct metric field, summed:
a batch of 500 jobs costs a handful of commands instead of thousands. Everything else
(LPUSH, ...) goes straight into the same pipeline.
"""

from __future__ import annotations

import contextlib
from collections import Counter, defaultdict
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

# KEYS: the hashes. ARGV, per key: ttl (0: leave the TTL alone), n (field count), then
# n field/value pairs.
_WRITE_HASHES = """
local pos = 1
for i, key in ipairs(KEYS) do
    local ttl = tonumber(ARGV[pos])
    local n = tonumber(ARGV[pos + 1])
    pos = pos + 2
    redis.call('HSET', key, unpack(ARGV, pos, pos + 2 * n - 1))
    pos = pos + 2 * n
    if ttl > 0 then
        redis.call('EXPIRE', key, ttl)
    end
end
return #KEYS
"""

# Keys per EVAL: bounded so that one script call never holds Redis for long.
_HASHES_PER_EVAL = 1000


class Batch:
    def __init__(self, pipe: Pipeline) -> None:
        self.pipe = pipe
        self._hash_keys: list[str] = []
        self._hash_args: list[str | int] = []
        self._ints: Counter[tuple[str, str]] = Counter()
        self._floats: defaultdict[tuple[str, str], float] = defaultdict(float)

    def hash(self, key: str, fields: dict[str, str], ttl: int) -> None:
        """HSET `fields` on `key`, then EXPIRE it in `ttl` seconds (0: keep its TTL)."""
        self._hash_keys.append(key)
        self._hash_args += [ttl, len(fields)]
        for name, value in fields.items():
            self._hash_args += [name, value]

    def hincrby(self, key: str, field: str, amount: int = 1) -> None:
        self._ints[(key, field)] += amount

    def hincrbyfloat(self, key: str, field: str, amount: float) -> None:
        self._floats[(key, field)] += amount

    def flush(self) -> None:
        """Add the gathered writes to the pipeline (called on exit of `redis_batch`)."""
        keys, args = self._hash_keys, self._hash_args
        start_key = start_arg = 0
        while start_key < len(keys):
            end_key = min(len(keys), start_key + _HASHES_PER_EVAL)
            end_arg = start_arg
            for _ in range(start_key, end_key):  # walk the per-key argument blocks
                end_arg += 2 + 2 * int(args[end_arg + 1])
            chunk_keys = keys[start_key:end_key]
            self.pipe.eval(_WRITE_HASHES, len(chunk_keys), *chunk_keys, *args[start_arg:end_arg])
            start_key, start_arg = end_key, end_arg
        for (key, field), n in self._ints.items():
            if n:
                self.pipe.hincrby(key, field, n)
        for (key, field), x in self._floats.items():
            self.pipe.hincrbyfloat(key, field, x)
        self._hash_keys, self._hash_args = [], []
        self._ints.clear()
        self._floats.clear()


@contextlib.asynccontextmanager
async def redis_batch(redis: aioredis.Redis) -> AsyncIterator[Batch]:
    """A non-transactional pipeline whose gathered writes go out in one round trip."""
    async with redis.pipeline(transaction=False) as pipe:
        batch = Batch(pipe)
        yield batch
        batch.flush()
        await pipe.execute()
