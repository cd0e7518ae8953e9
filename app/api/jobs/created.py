"""The `created` counter of POST /jobs and /jobs/batch, written to Redis off the request
path.

Creating a job needs PostgreSQL only. The counter used to be written by the request (the
batch) or by the group commit's flusher before it took the next batch (POST /jobs), so a
Redis that hangs without refusing (SIGSTOP, a full network buffer, a failover in
progress) held job creation for up to its timeout. Now a request only adds to an
in-memory tally (no await); one background task writes the tally with HINCRBY. While
Redis hangs, the tally grows (one integer per queue: bounded) and is written when Redis
answers again. A write that times out is not retried, since Redis may have applied it;
one that fails otherwise is retried with backoff. A metric never fails a request.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Sequence

import redis.exceptions

from app.jobs.model import InsertResult
from app.loops import Backoff
from app.metrics import MetricsWriter
from app.runtime import Runtime

log = logging.getLogger("hybridq.api")


class CreatedCounter:
    """Counts created jobs per queue and writes the counts to Redis in the background."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._tally: collections.Counter[str] = collections.Counter()
        self._wake = asyncio.Event()
        self._closing = False
        self._backoff = Backoff()
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Jobs counted and not yet written to Redis."""
        return sum(self._tally.values())

    def add(self, results: Sequence[object]) -> None:
        """Count the created jobs among `results`; returns at once."""
        for r in results:
            if isinstance(r, InsertResult) and r.outcome == "created" and r.job is not None:
                self._tally[r.job.queue_name] += 1
        if self._tally:
            self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="created-counter")

    async def close(self, timeout: float) -> None:
        """Write what is counted (waiting up to `timeout` seconds for Redis), then stop."""
        self._closing = True
        self._wake.set()
        if self._task is None:
            return
        done, _ = await asyncio.wait({self._task}, timeout=timeout)
        if not done:
            self._task.cancel()
            log.warning("created counter: %d jobs not counted (Redis did not answer)", self.pending)

    async def _run(self) -> None:
        writer = MetricsWriter(self._rt.keys)
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._tally:
                batch, self._tally = self._tally, collections.Counter()
                try:
                    await writer.count_now(self._rt.redis, "created", batch.items())
                    self._backoff.reset()
                except redis.exceptions.TimeoutError:
                    log.warning(
                        "created counter: Redis timed out; %d jobs may be uncounted",
                        sum(batch.values()),
                    )
                except Exception as exc:
                    self._tally.update(batch)  # not applied: written on the next attempt
                    log.warning("created counter: Redis failed (%s); retrying", exc)
                    if not self._closing:
                        await asyncio.sleep(self._backoff.next())
                        self._wake.set()
                        continue
            if self._closing:
                return
