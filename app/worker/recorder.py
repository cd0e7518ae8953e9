"""Groups the outcomes of concurrent jobs into one fenced statement per kind and flush.

A job that finishes while a flush is in progress waits for the next one, so under load
many outcomes share a round trip and an idle worker adds no delay (app.batcher). When
PostgreSQL is unreachable the outcomes stay pending and the flush is retried until it
succeeds or the worker gives up (then the lease expires and the job runs again: never
lost).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import redis.asyncio as aioredis

from app.batcher import Batcher
from app.db.hot import JobStore
from app.db.rows import Failure, Success
from app.job_state import JobStateCache
from app.logs import bound_job
from app.metrics import MetricsWriter
from app.redis_batch import Batch, redis_batch

log = logging.getLogger("hybridq.worker")

Outcome = Success | Failure

# Seconds a stopping worker waits for its pending outcomes to be written; after that
# they are abandoned and their jobs come back when their leases expire.
RECORDER_CLOSE_TIMEOUT = 10.0


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
        # Each outcome is answered with the job's new status, or None when this
        # worker's fence no longer held (the outcome was discarded).
        self._batcher: Batcher[Outcome, str | None] = Batcher(
            self._write,
            name=f"recorder-{worker_id}",
            retry=True,
            after_flush=self._update_cache,
        )

    def start(self) -> None:
        self._batcher.start()

    async def record(self, outcome: Outcome) -> bool:
        """Queue an outcome; True once it is written, False if the fence no longer held."""
        return await self._batcher.submit(outcome) is not None

    async def close(self, timeout: float = RECORDER_CLOSE_TIMEOUT) -> None:
        """Flush what is pending, then stop; give up after `timeout` seconds."""
        await self._batcher.close(timeout)

    def abandon(self) -> None:
        """Stop without flushing (hard deadline); pending jobs come back via lease expiry."""
        self._batcher.abandon()

    async def _write(self, batch: list[Outcome]) -> list[str | None]:
        successes = [o for o in batch if isinstance(o, Success)]
        failures = [o for o in batch if isinstance(o, Failure)]
        status: dict[object, str] = dict.fromkeys(
            await self.store.complete(self.worker_id, successes), "completed"
        )
        for result in await self.store.fail(self.worker_id, failures):
            status[result.job_id] = result.status
        answers: list[str | None] = []
        for outcome in batch:
            answer = status.get(outcome.job_id)
            if answer is None:
                with bound_job(outcome.job_id, None, outcome.attempt, self.worker_id):
                    log.warning(
                        "job %s attempt %d: outcome discarded, this worker no longer holds it",
                        outcome.job_id,
                        outcome.attempt,
                    )
            answers.append(answer)
        return answers

    async def _update_cache(
        self, batch: list[Outcome], answers: Sequence[str | BaseException | None]
    ) -> None:
        """The jobs are recorded and their slots released: now the hashes and metrics."""
        try:
            async with redis_batch(self.redis) as pipe:
                for outcome, status in zip(batch, answers, strict=True):
                    if not isinstance(status, str):
                        continue
                    if isinstance(outcome, Success):
                        self.state.completed(
                            pipe, outcome.job_id, outcome.finished_at, outcome.attempt
                        )
                        self._count_outcome(pipe, outcome, "completed")
                    else:
                        self.state.failed_attempt(
                            pipe, outcome.job_id, status, outcome.error, outcome.attempt
                        )
                        self.metrics.count(pipe, "failed", outcome.queue_name)
                        kind = "dead_lettered" if status == "failed" else "retried"
                        self._count_outcome(pipe, outcome, kind)
        except Exception:
            # The hash is only a cache of PostgreSQL's state: never fail a job over it.
            log.warning("could not update job hashes in Redis", exc_info=True)

    def _count_outcome(self, pipe: Batch, outcome: Outcome, counter: str) -> None:
        self.metrics.count(pipe, counter, outcome.queue_name)
        run = (outcome.finished_at - outcome.started_at).total_seconds()
        self.metrics.observe(pipe, "run_seconds", outcome.queue_name, run)
