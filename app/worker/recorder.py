"""Groups the outcomes of concurrent jobs into one fenced statement per kind and flush.

A job that finishes while a flush is in progress waits for the next one, so under load
many outcomes share a round trip and an idle worker adds no delay. When PostgreSQL is
unreachable the outcomes stay pending and the flush is retried until it succeeds or the
worker gives up (then the lease expires and the job runs again: never lost).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from app.db.store import Failure, JobStore, Success
from app.job_state import JobStateCache
from app.logs import bound_job
from app.loops import Backoff
from app.metrics import MetricsWriter
from app.redis_batch import Batch, redis_batch

log = logging.getLogger("hybridq.worker")

Outcome = Success | Failure


@dataclass(slots=True)
class _Pending:
    outcome: Outcome
    done: asyncio.Future[bool] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class OutcomeRecorder:
    def __init__(
        self,
        *,
        store: JobStore,
        redis: aioredis.Redis,
        state: JobStateCache,
        worker_id: str,
    ) -> None:
        self.store = store
        self.redis = redis
        self.state = state
        self.worker_id = worker_id
        self.metrics = MetricsWriter(state.keys)
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"recorder-{self.worker_id}")

    async def record(self, outcome: Outcome) -> bool:
        """Queue an outcome; True once it is written, False if the fence no longer held."""
        if self._task is None or self._task.done():
            raise RuntimeError("recorder is not running")
        item = _Pending(outcome)
        self._pending.append(item)
        self._wake.set()
        return await item.done

    async def close(self, timeout: float = 10.0) -> None:
        """Flush what is pending, then stop; give up after `timeout` seconds."""
        self._closing = True
        self._wake.set()
        if self._task is None:
            return
        done, _ = await asyncio.wait({self._task}, timeout=timeout)
        if not done:
            log.error("could not record %d outcomes before stopping", len(self._pending))
            self.abandon()

    def abandon(self) -> None:
        """Stop without flushing (hard deadline); pending jobs come back via lease expiry."""
        if self._task is not None:
            self._task.cancel()
        for item in self._pending:
            if not item.done.done():
                item.done.cancel()
        self._pending.clear()

    async def _run(self) -> None:
        backoff = Backoff()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    await self._flush(batch)
                    backoff.reset()
                except Exception:
                    delay = backoff.next()
                    log.exception(
                        "recording %d outcomes failed; retrying in %.1fs", len(batch), delay
                    )
                    self._pending[:0] = batch
                    await asyncio.sleep(delay)
            if self._closing:
                return

    async def _flush(self, batch: list[_Pending]) -> None:
        successes = [p.outcome for p in batch if isinstance(p.outcome, Success)]
        failures = [p.outcome for p in batch if isinstance(p.outcome, Failure)]
        applied: set[uuid.UUID] = set()
        completed = await self.store.complete(self.worker_id, successes)
        applied |= completed
        failed = await self.store.fail(self.worker_id, failures)
        applied |= {f.job_id for f in failed}

        # The jobs are recorded: release their slots first, then update the cache.
        for p in batch:
            ok = p.outcome.job_id in applied
            if not ok:
                with bound_job(p.outcome.job_id, None, p.outcome.attempt, self.worker_id):
                    log.warning(
                        "job %s attempt %d: outcome discarded, this worker no longer holds it",
                        p.outcome.job_id,
                        p.outcome.attempt,
                    )
            if not p.done.done():
                p.done.set_result(ok)

        try:
            async with redis_batch(self.redis) as pipe:
                for s in successes:
                    if s.job_id in completed:
                        self.state.completed(pipe, s.job_id, s.finished_at, s.attempt)
                        self._count_outcome(pipe, s, "completed")
                errors = {f.job_id: f for f in failures}
                for result in failed:
                    f = errors[result.job_id]
                    self.state.failed_attempt(pipe, f.job_id, result.status, f.error, f.attempt)
                    self.metrics.count(pipe, "failed", f.queue_name)
                    outcome = "retried" if result.status == "queued" else "dead_lettered"
                    self._count_outcome(pipe, f, outcome)
        except Exception:
            # The hash is only a cache of PostgreSQL's state: never fail a job over it.
            log.warning("could not update job hashes in Redis", exc_info=True)

    def _count_outcome(self, pipe: Batch, outcome: Outcome, counter: str) -> None:
        self.metrics.count(pipe, counter, outcome.queue_name)
        run = (outcome.finished_at - outcome.started_at).total_seconds()
        self.metrics.observe(pipe, "run_seconds", outcome.queue_name, run)
