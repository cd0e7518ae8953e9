"""Readings of the live system shared by /queues, /health/queues and /metrics: Redis list
depths (one pipeline of LLEN), live workers (the heartbeat index, never a key scan) and
the Redis server's own figures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from app.cluster import by_shard, is_cluster, per_shard, primaries
from app.keys import PRIORITY_LEVELS, Keys

WORKER_IDS_MAX = 1000
# Seconds a shard may take to answer the health probe before it counts as down.
SHARD_TIMEOUT = 2.0


async def redis_depths(
    redis: aioredis.Redis, keys: Keys, queue_names: Sequence[str]
) -> dict[str, dict[str, int]]:
    """queue -> level (high, normal, low) -> LLEN, in one pipeline. On a Redis Cluster,
    one pipeline per shard, and the queues of a shard that fails are left out (its
    state is in `redis_shards`); an error only if every shard failed."""
    if not is_cluster(redis):
        return await _depths(redis, keys, queue_names)
    out: dict[str, dict[str, int]] = {}
    failures = []
    results = await per_shard(
        redis, queue_names, keys.wake_marker, lambda g: _depths(redis, keys, g)
    )
    for _shard, _group, result in results:
        if isinstance(result, BaseException):
            failures.append(result)
        else:
            out.update(result)
    if failures and len(failures) == len(results):
        raise failures[0]
    return {q: out[q] for q in queue_names if q in out}


async def _depths(
    redis: aioredis.Redis, keys: Keys, queue_names: Sequence[str]
) -> dict[str, dict[str, int]]:
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


async def redis_server(redis: aioredis.Redis, **target: Any) -> RedisServer:
    """`target`: target_nodes=<a primary> on a Redis Cluster."""
    pong = await redis.ping(**target)
    memory = await redis.info("memory", **target)
    clients = await redis.info("clients", **target)
    return RedisServer(
        ping="PONG" if pong else str(pong),
        memory_used=str(memory.get("used_memory_human", "unknown")),
        connected_clients=int(clients.get("connected_clients", 0)),
    )


@dataclass(frozen=True, slots=True)
class ShardState:
    """Redis Cluster: one primary, whether it answers, and the queues it holds."""

    shard: str  # host:port
    server: RedisServer | None  # None: it did not answer
    error: str | None
    queues: list[str]


async def redis_shards(
    redis: aioredis.Redis, keys: Keys, queue_names: Sequence[str]
) -> list[ShardState]:
    """Every primary of the cluster (asked concurrently, each under SHARD_TIMEOUT), and
    the queues whose keys it holds."""
    nodes = await primaries(redis)
    held = await by_shard(redis, queue_names, keys.wake_marker)
    answers = await asyncio.gather(
        *(asyncio.wait_for(redis_server(redis, target_nodes=n), SHARD_TIMEOUT) for n in nodes),
        return_exceptions=True,
    )
    return [
        ShardState(
            shard=str(node.name),
            server=None if isinstance(answer, BaseException) else answer,
            error=(
                f"{type(answer).__name__}: {answer}"[:200]
                if isinstance(answer, BaseException)
                else None
            ),
            queues=held.get(str(node.name), []),
        )
        for node, answer in zip(nodes, answers, strict=True)
    ]
