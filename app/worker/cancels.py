"""How a worker learns that one of its running jobs was cancelled.

At once from Redis pub/sub: the API publishes the job's id on the `cancel` channel after
recording the request in PostgreSQL, and every worker subscribed to it looks the id up
among its own jobs (one small message per cancel; nothing to poll on the hot path). A
message sent while a worker's subscription was down is lost, so the worker also reads
the requests of its running jobs from PostgreSQL with every heartbeat (a third of
VISIBILITY_TIMEOUT): prompt in the normal case, and at worst one heartbeat late.

Once the job is recorded `cancelled`, the worker's recorder publishes on `cancelled:<id>`,
which the API waits on to answer "stopped" rather than "requested".
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence

import redis.asyncio as aioredis

from app.db.cancels import CancelStore
from app.keys import Keys
from app.loops import Backoff, wait_any

log = logging.getLogger("hybridq.worker")

# How long one read of the subscription waits before looking at the stop event again.
LISTEN_TIMEOUT = 0.5


class CancelWatcher:
    def __init__(
        self,
        *,
        redis: aioredis.Redis,
        keys: Keys,
        store: CancelStore,
        worker_id: str,
        on_cancel: Callable[[uuid.UUID], None],
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.store = store
        self.worker_id = worker_id
        self.on_cancel = on_cancel
        self.subscribed = asyncio.Event()  # for tests: the channel is listened to

    async def listen(self, stop: asyncio.Event) -> None:
        """Follow the cancel channel until `stop` is set, resubscribing after errors."""
        backoff = Backoff()
        while not stop.is_set():
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(self.keys.cancel_channel())
                    self.subscribed.set()
                    backoff.reset()
                    while not stop.is_set():
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=LISTEN_TIMEOUT
                        )
                        if message is not None:
                            self._received(message.get("data"))
            except Exception as exc:
                self.subscribed.clear()
                delay = backoff.next()
                log.warning("cancel channel unavailable (%s); retrying in %.1fs", exc, delay)
                await wait_any(stop, timeout=delay)

    def _received(self, data: object) -> None:
        try:
            text = data.decode() if isinstance(data, bytes) else str(data)
            job_id = uuid.UUID(text)
        except ValueError:
            log.warning("ignoring malformed message on the cancel channel: %r", data)
            return
        self.on_cancel(job_id)

    async def poll(self, job_ids: Sequence[uuid.UUID]) -> None:
        """The heartbeat's look at PostgreSQL, for requests whose message was missed."""
        for job_id in await self.store.requested(job_ids, self.worker_id):
            self.on_cancel(job_id)
