"""Redis Cluster mode (REDIS_CLUSTER): the client, and grouping of keys by shard.

Every key of one queue carries the queue's hash tag (`queue:{name}:...`, app.keys), so
its lists, in-flight set, wake-up marker and loss marker share one slot, and every
script over one queue runs on one shard. What spans several queues (a worker's pop, the
migrator's push, the maintenance passes, /health/queues) is split by shard here, one
call or pipeline per shard, and a shard that fails is skipped rather than failing the
others: its queues wait, the others keep flowing.

The client is redis-py's RedisCluster with three changes, for a shard that is down:
- a primary whose call failed is left out for a second (its calls fail at once, then a
  PING looks whether it is back), so a hung primary does not hold every caller for a
  socket timeout;
- after a connection error redis-py closes every connection to every node and reads
  the slot map again; here it only reads the slot map again, so calls in flight to the
  healthy shards (a worker's blocking wait, a migrator's push) are not cut;
- the nodes it already knows keep their connections when the slot map is read again.
Pub/sub (the cancel channels) goes through a plain connection to one primary: PUBLISH
reaches subscribers on every node of a cluster.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, NodesManager, RedisCluster
from redis.crc import key_slot
from redis.exceptions import ConnectionError, RedisError, TimeoutError

T = TypeVar("T")
R = TypeVar("R")

# Set while redis-py handles an error of one command: its aclose() then only marks the
# slot map to be read again (see HybridCluster.aclose).
_IN_COMMAND: contextvars.ContextVar[bool] = contextvars.ContextVar("in_command", default=False)


# Seconds a primary whose call failed (refused, or timed out: a hung server) is left out:
# its calls fail at once (ShardDown) meanwhile, so no caller waits on it; after that a
# PING (within SHARD_PROBE_TIMEOUT) looks whether it answers again.
SHARD_DOWN_SECONDS = 1.0
SHARD_PROBE_TIMEOUT = 1.0
_down_until: dict[str, float] = {}  # node name (host:port) -> when to probe it again
_probes: dict[str, asyncio.Task[None]] = {}


class ShardDown(RedisError):
    """A call to a primary that failed a moment ago, refused at once. (Not a
    ConnectionError: redis-py would read the slot map again for each.)"""


class _GuardedNode(ClusterNode):
    """A node whose calls fail fast while it is known down (see SHARD_DOWN_SECONDS)."""

    __slots__ = ()

    def _check(self) -> None:
        until = _down_until.get(self.name)
        if until is None:
            return
        probe = _probes.get(self.name)
        # A probe left by another event loop (tests run one per test) never ends here.
        if time.monotonic() >= until and (
            probe is None or probe.done() or probe.get_loop() is not asyncio.get_running_loop()
        ):
            _probes[self.name] = asyncio.create_task(self._probe())
        raise ShardDown(f"Redis shard {self.name} is down; looked at again every second")

    async def _probe(self) -> None:
        try:
            await asyncio.wait_for(ClusterNode.execute_command(self, "PING"), SHARD_PROBE_TIMEOUT)
        except Exception:
            _down_until[self.name] = time.monotonic() + SHARD_DOWN_SECONDS
        else:
            _down_until.pop(self.name, None)
        finally:
            if _probes.get(self.name) is asyncio.current_task():
                del _probes[self.name]

    def _failed(self) -> None:
        _down_until[self.name] = time.monotonic() + SHARD_DOWN_SECONDS

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        try:
            return await super().execute_command(*args, **kwargs)
        except (ConnectionError, TimeoutError):
            self._failed()
            raise

    async def execute_pipeline(self, commands: list[Any]) -> bool:
        self._check()
        try:
            failed: bool = await super().execute_pipeline(commands)
        except (ConnectionError, TimeoutError):
            self._failed()
            raise
        if failed and any(isinstance(c.result, ConnectionError | TimeoutError) for c in commands):
            self._failed()
        return failed


def _guard(nodes: Iterable[ClusterNode]) -> None:
    for node in nodes:
        if type(node) is ClusterNode:
            node.__class__ = _GuardedNode


class _KeepingNodesManager(NodesManager):
    """Keeps the ClusterNode (and its open connections) of a node it already knows when
    the slot map is read again; redis-py would replace and disconnect every one."""

    __slots__ = ()

    def set_nodes(
        self,
        old: dict[str, ClusterNode],
        new: dict[str, ClusterNode],
        remove_old: bool = False,
    ) -> None:
        if old is self.nodes_cache:
            replaced: dict[int, ClusterNode] = {}
            for name, node in list(new.items()):
                kept = old.get(name)
                if kept is not None and kept is not node:
                    kept.server_type = node.server_type
                    new[name] = kept
                    replaced[id(node)] = kept
            if replaced:
                for nodes in {id(n): n for n in self.slots_cache.values()}.values():
                    nodes[:] = [replaced.get(id(n), n) for n in nodes]
        _guard(new.values())
        super().set_nodes(old, new, remove_old)

    def _update_moved_slots(self) -> None:
        super()._update_moved_slots()
        _guard(self.nodes_cache.values())


class HybridCluster(RedisCluster):
    """RedisCluster that survives a shard being down without disturbing the others."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        nm = self.nodes_manager
        self.nodes_manager = _KeepingNodesManager(
            list(nm.startup_nodes.values()),
            nm.require_full_coverage,
            nm.connection_kwargs,
            dynamic_startup_nodes=nm._dynamic_startup_nodes,
            address_remap=nm.address_remap,
            event_dispatcher=self._event_dispatcher,
        )
        _guard(self.nodes_manager.startup_nodes.values())
        self._pubsub_clients: dict[str, aioredis.Redis] = {}

    async def _execute_command(self, target_node: ClusterNode, *args: Any, **kwargs: Any) -> Any:
        token = _IN_COMMAND.set(True)
        try:
            return await super()._execute_command(target_node, *args, **kwargs)
        finally:
            _IN_COMMAND.reset(token)

    async def aclose(self) -> None:
        if _IN_COMMAND.get():
            self._initialize = True  # read the slot map again before the next command
            return
        await super().aclose()
        clients, self._pubsub_clients = list(self._pubsub_clients.values()), {}
        for client in clients:
            await client.aclose()

    async def publish(self, channel: Any, message: Any, **kwargs: Any) -> int:
        """PUBLISH on the primary that pubsub() subscribes on (a cluster forwards the
        message to every node, but counts only the receivers of the node it reached)."""
        n = await self.execute_command("PUBLISH", channel, message, target_nodes=self.DEFAULT_NODE)
        return int(n)

    def pubsub(self, **kwargs: Any) -> PubSub:
        node = self.get_default_node() or next(iter(self.nodes_manager.startup_nodes.values()))
        client = self._pubsub_clients.get(node.name)
        if client is None:
            pool = aioredis.ConnectionPool(
                connection_class=node.connection_class, **node.connection_kwargs
            )
            client = self._pubsub_clients[node.name] = aioredis.Redis.from_pool(pool)
        return client.pubsub(**kwargs)


def is_cluster(redis: object) -> bool:
    return isinstance(redis, RedisCluster)


def publish_in(pipe: Any, channel: str, message: bytes) -> None:
    """Queue a PUBLISH on a pipeline (a cluster pipeline has no publish of its own)."""
    if isinstance(pipe, ClusterPipeline):
        pipe.execute_command("PUBLISH", channel, message, target_nodes=RedisCluster.DEFAULT_NODE)
    else:
        pipe.publish(channel, message)


def slot_of(key: str) -> int:
    """The hash slot of `key` (its hash tag's, if it has one)."""
    return key_slot(key.encode())


async def shard_of(redis: aioredis.Redis, key: str) -> str:
    """The name (host:port) of the primary serving `key`'s slot now."""
    cluster = cast(RedisCluster, redis)
    if cluster._initialize:
        await cluster.initialize()
    node: ClusterNode = cluster.nodes_manager.get_node_from_slot(slot_of(key))
    return str(node.name)


async def by_shard(
    redis: aioredis.Redis, items: Sequence[T], key: Callable[[T], str]
) -> dict[str, list[T]]:
    """`items` grouped by the primary that serves the slot of `key(item)`, in order."""
    groups: dict[str, list[T]] = {}
    for item in items:
        groups.setdefault(await shard_of(redis, key(item)), []).append(item)
    return groups


async def per_shard(
    redis: aioredis.Redis,
    items: Sequence[T],
    key: Callable[[T], str],
    run: Callable[[list[T]], Awaitable[R]],
) -> list[tuple[str, list[T], R | BaseException]]:
    """`run` on each shard's share of `items`, concurrently: (shard, items, result or
    the exception it raised). A shard that fails does not fail the others."""
    groups = await by_shard(redis, items, key)
    results = await asyncio.gather(*(run(g) for g in groups.values()), return_exceptions=True)
    return [
        (shard, group, result)
        for (shard, group), result in zip(groups.items(), results, strict=True)
    ]


async def primaries(redis: aioredis.Redis) -> list[ClusterNode]:
    """The cluster's primaries (one per shard), by name."""
    cluster = cast(RedisCluster, redis)
    if cluster._initialize:
        await cluster.initialize()
    return sorted(cluster.get_primaries(), key=lambda n: str(n.name))


async def ping(redis: aioredis.Redis, timeout: float = 2.0) -> None:
    """PING. On a Redis Cluster every primary at once (each within `timeout`): it
    passes if one answers, since the queues of the others flow; raises if none does."""
    if not is_cluster(redis):
        await redis.ping()
        return
    nodes = await primaries(redis)
    answers = await asyncio.gather(
        *(asyncio.wait_for(redis.ping(target_nodes=n), timeout) for n in nodes),
        return_exceptions=True,
    )
    failures = [a for a in answers if isinstance(a, BaseException)]
    if len(failures) == len(answers):
        raise failures[0] if failures else ConnectionError("no Redis Cluster primary")
