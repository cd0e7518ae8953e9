"""Readings of the live system shared by /queues, /health/queues and /metrics: Redis list
depths (one pipeline of LLEN), live workers (the heartbeat index, never a key scan) and
the Redis server's own figures."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from app.keys import PRIORITY_LEVELS, Keys

WORKER_IDS_MAX = 1000


async def redis_depths(
    redis: aioredis.Redis, keys: Keys, queue_names: Sequence[str]
) -> dict[str, dict[str, int]]:
    """queue -> level (high, normal, low) -> LLEN, in one pipeline."""
    async with redis.pipeline(transaction=False) as pipe:
        for q in queue_names:
            for level in PRIORITY_LEVELS:
                pipe.llen(keys.queue_list(q, level))
        lengths = await pipe.execute()
    out: dict[str, dict[str, int]] = {}
    for i, q in enumerate(queue_names):
        out[q] = dict(zip(PRIORITY_LEVELS, map(int, lengths[3 * i : 3 * i + 3]), strict=True))
    return out


@dataclass(frozen=True, slots=True)
class LiveWorkers:
    count: int
    ids: list[str]


async def live_workers(redis: aioredis.Redis, keys: Keys, max_age: float) -> LiveWorkers:
    """Workers whose last heartbeat (their score in the workers index) is at most
    `max_age` seconds old."""
    since = time.time() - max_age
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zcount(keys.workers_index(), since, "+inf")
        pipe.zrangebyscore(keys.workers_index(), since, "+inf", start=0, num=WORKER_IDS_MAX)
        count, ids = await pipe.execute()
    return LiveWorkers(
        count=int(count), ids=[i.decode() if isinstance(i, bytes) else i for i in ids]
    )


@dataclass(frozen=True, slots=True)
class RedisServer:
    ping: str
    memory_used: str
    connected_clients: int


async def redis_server(redis: aioredis.Redis) -> RedisServer:
    pong = await redis.ping()
    memory = await redis.info("memory")
    clients = await redis.info("clients")
    return RedisServer(
        ping="PONG" if pong else str(pong),
        memory_used=str(memory.get("used_memory_human", "unknown")),
        connected_clients=int(clients.get("connected_clients", 0)),
    )
