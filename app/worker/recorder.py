"""Groups the outcomes of concurrent jobs into one fenced statement per kind and flush.

A job that finishes while a flush is in progress waits for the next one, so under load
many outcomes share a round trip and an idle worker adds no delay (app.batcher). When
PostgreSQL is unreachable the outcomes stay pending and the flush is retried until it
succeeds or the worker gives up (then the lease expires and the job runs again: never
lost). A retried flush writes only what did not apply yet: after a partial success
(the completions written, the failures not), the completions are not sent again (their
fence would no longer hold, and they would be reported as discarded).

Once an outcome is written, the job's in-flight entry in Redis goes with the hash
update. An outcome that was not applied (the fence no longer held, e.g. the claim was an
asynchronous commit lost in a PostgreSQL crash) keeps its entry: the in-flight recovery
pushes the message back, and the claim decides whether it runs again.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence

import redis.asyncio as aioredis

from app.batcher import Batcher
from app.cluster import publish_in
from app.db.hot import JobStore
from app.db.outcomes import OutcomeStore
from app.db.rows import (
    CancelledRun,
    Failure,
    FailureResult,
    PermanentFailed,
    Snoozed,
    Success,
)
from app.job_state import JobStateCache
from app.logs import bound_job
from app.metrics import MetricsWriter
from app.redis_batch import Batch, redis_batch
from app.worker.fetch import Popped
from app.worker.outcomes import Outcome

log = logging.getLogger("hybridq.worker")


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
        max_snoozes: int = 25,
        on_crash: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.store = store
        self.outcomes = OutcomeStore(store.pool)
        self.max_snoozes = max_snoozes
        self.redis = redis
        self.state = state
        self.worker_id = worker_id
        self.metrics = MetricsWriter(state.keys)
        # In-flight entries of claimed jobs, removed once their outcome is written.
        self._entries: dict[uuid.UUID, Popped] = {}
        # Answers of outcomes already written by a flush that then failed (retry mode).
        self._settled: dict[Outcome, str | None] = {}
        # Each outcome is answered with the job's new status, or None when this
        # worker's fence no longer held (the outcome was discarded).
        self._batcher: Batcher[Outcome, str | None] = Batcher(
            self._write,
            name=f"recorder-{worker_id}",
            retry=True,
            after_flush=self._update_cache,
            on_crash=on_crash,
        )

    def start(self) -> None:
        self._batcher.start()

    def track(self, job_id: uuid.UUID, entry: Popped) -> None:
        """The in-flight entry to remove once this job's outcome is written."""
        self._entries[job_id] = entry

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
        # An answer is kept in `settled` as soon as its statement is done, so a flush
        # retried after a later statement failed does not send it again (its fence would
        # no longer hold). A refused one waits for the late cancel below.
        settled = self._settled
        todo = [o for o in batch if o not in settled]
        refused: list[Outcome] = []
        wid = self.worker_id
        successes = [o for o in todo if isinstance(o, Success)]
        if successes:
            done = await self.store.complete(wid, successes)
            _settle(settled, refused, successes, {j: "completed" for j in done})
        failures = [o for o in todo if isinstance(o, Failure)]
        if failures:
            _settle(settled, refused, failures, _statuses(await self.store.fail(wid, failures)))
        permanent = [o for o in todo if isinstance(o, PermanentFailed)]
        if permanent:
            results = await self.outcomes.fail_permanently(wid, permanent)
            _settle(settled, refused, permanent, _statuses(results))
        snoozed = [o for o in todo if isinstance(o, Snoozed)]
        if snoozed:
            results = await self.outcomes.snooze(wid, snoozed, self.max_snoozes)
            _settle(settled, refused, snoozed, _statuses(results))
        stopped = [o for o in todo if isinstance(o, CancelledRun)]
        if stopped:
            results = await self.outcomes.cancel_running(wid, stopped)
            _settle(settled, refused, stopped, _statuses(results))
        # An outcome refused because a cancel was asked after this worker last looked:
        # the job ends cancelled, and the outcome is discarded (one more statement, only
        # when some outcome was refused).
        late = [o for o in refused if not isinstance(o, CancelledRun)]
        if late:
            runs = [
                CancelledRun(
                    o.job_id, o.attempt, o.started_at, o.finished_at, o.queue_name, o.token
                )
                for o in late
            ]
            status = _statuses(await self.outcomes.cancel_running(wid, runs))
            for stale in late:
                settled[stale] = status.get(stale.job_id)
        for outcome in refused:
            settled.setdefault(outcome, None)
        replies: list[str | None] = []
        for outcome in batch:
            answer = settled.pop(outcome, None)
            if answer is None:
                with bound_job(outcome.job_id, None, outcome.attempt, self.worker_id):
                    log.warning(
                        "job %s attempt %d: outcome discarded, this worker no longer holds it",
                        outcome.job_id,
                        outcome.attempt,
                    )
            replies.append(answer)
        return replies

    async def _update_cache(
        self, batch: list[Outcome], answers: Sequence[str | BaseException | None]
    ) -> None:
        """The jobs are recorded and their slots released: now the hashes and metrics."""
        entries = [self._entries.pop(o.job_id, None) for o in batch]
        try:
            async with redis_batch(self.redis) as pipe:
                for outcome, status, entry in zip(batch, answers, entries, strict=True):
                    if not isinstance(status, str):
                        continue
                    if entry is not None:
                        pipe.zrem(self.state.keys.inflight(entry.queue), entry.member)
                    if status == "cancelled" or isinstance(outcome, CancelledRun):
                        # Stopped on a cancel (or its outcome came after the request).
                        self.state.operator_changed(pipe, outcome.job_id, status, outcome.attempt)
                        self.metrics.count(pipe, "cancelled", outcome.queue_name)
                        # The API may be waiting to answer "stopped" (app.worker.cancels).
                        ack = self.state.keys.cancel_ack_channel(str(outcome.job_id))
                        publish_in(pipe.pipe, ack, b"cancelled")
                    elif isinstance(outcome, Success):
                        self.state.completed(
                            pipe, outcome.job_id, outcome.finished_at, outcome.attempt
                        )
                        self._count_outcome(pipe, outcome, "completed")
                    elif isinstance(outcome, Snoozed) and status != "failed":
                        # Not a failed attempt: the attempt was given back.
                        self.state.requeued(pipe, outcome.job_id, outcome.attempt - 1, status)
                    else:
                        error = outcome.reason if isinstance(outcome, Snoozed) else outcome.error
                        self.state.failed_attempt(
                            pipe, outcome.job_id, status, error, outcome.attempt
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


def _statuses(results: Sequence[FailureResult]) -> dict[uuid.UUID, str]:
    return {r.job_id: r.status for r in results}


def _settle(
    settled: dict[Outcome, str | None],
    refused: list[Outcome],
    outcomes: Sequence[Outcome],
    status: dict[uuid.UUID, str],
) -> None:
    """Keep each applied outcome's new status; collect the ones the fence refused."""
    for outcome in outcomes:
        answer = status.get(outcome.job_id)
        if answer is None:
            refused.append(outcome)
        else:
            settled[outcome] = answer
