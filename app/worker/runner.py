"""The worker: pops jobs from Redis, claims them in PostgreSQL, runs their handlers.

Fetch: one atomic pop over every served queue's lists (app.worker.fetch), high before
normal before low, fair between queues, taking as many jobs as there are free slots and
recording each in flight. A worker with most of its slots busy waits up to REFILL_WAIT
for half of them to be free, so that one pop, one claim and one cache write serve many
jobs (an idle worker pops at once). Claim: one conditional UPDATE for the popped ids
(migrated_to_redis -> running, with worker id, attempt number, lease and a random
token); a copy whose claim fails (a duplicate, a cancelled job) is dropped without
running, and a claim that waits too long on a row lock is given up (the in-flight
recovery brings the copies back). Outcome: written by the recorder, fenced by (worker_id,
attempt, token); the job's slot is free once its handler returns (app.worker.inflight.Slots),
its in-flight entry goes once the outcome is written. Retries wait in PostgreSQL via run_at.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import os
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from app.crypto import PayloadCipher
from app.db.cancels import CancelStore
from app.db.hot import JobStore
from app.db.rows import Claim
from app.job_state import JobStateCache
from app.jobs.outcomes import PermanentFailure, Snooze
from app.keys import Keys
from app.logs import bound_job, set_job_context
from app.loops import Backoff, wait_any
from app.metrics import MetricsWriter
from app.redis_batch import redis_batch
from app.registry import Handler, HandlerRegistry, Job
from app.settings import Settings
from app.worker.cancels import CancelWatcher
from app.worker.cluster_fetch import make_fetcher
from app.worker.fetch import Popped, sort_popped
from app.worker.heartbeat import beat_until
from app.worker.inflight import InFlight, Slots
from app.worker.outcomes import outcome_of
from app.worker.recorder import OutcomeRecorder

log = logging.getLogger("hybridq.worker")

# Seconds a stopping worker waits for handlers it cancelled (past the grace period) to
# end; a handler that swallows the cancellation is not waited for longer.
HANDLER_CANCEL_WAIT = 5.0
# Seconds a busy worker waits for more of its slots to free before it pops again.
REFILL_WAIT = 0.002


def make_worker_id() -> str:
    """Unique per process run, so a restarted worker never shares a fencing token."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class WorkerCrashed(RuntimeError):
    """A task the worker depends on (heartbeat, outcome recorder) ended unexpectedly."""


class Worker:
    """Runs until `stop()` is called (or, in burst mode, until the queues are empty)."""

    def __init__(
        self,
        *,
        store: JobStore,
        redis: aioredis.Redis,
        keys: Keys,
        registry: HandlerRegistry,
        settings: Settings,
        queues: list[str] | None = None,
        concurrency: int | None = None,
        burst: bool = False,
        worker_id: str | None = None,
        cipher: PayloadCipher | None = None,
    ) -> None:
        self.store = store
        self.redis = redis
        self.keys = keys
        self.registry = registry
        self.settings = settings
        self.worker_id = worker_id or make_worker_id()
        self.queues = list(queues or settings.worker_queues or registry.queue_names())
        missing = [q for q in self.queues if q not in registry]
        if missing:
            raise ValueError(f"no handler registered for queue(s): {', '.join(missing)}")
        if not self.queues:
            raise ValueError("a worker needs at least one queue with a registered handler")
        self.concurrency = concurrency or settings.worker_concurrency
        self.burst = burst
        self.cipher = cipher or PayloadCipher([], {})
        self.fetcher = make_fetcher(redis, keys, self.queues)
        self.state = JobStateCache(keys, settings.job_hash_ttl)
        self.metrics = MetricsWriter(keys)
        self.recorder = OutcomeRecorder(
            store=store,
            redis=redis,
            state=self.state,
            worker_id=self.worker_id,
            max_snoozes=settings.max_snoozes,
            on_crash=self._crash,
        )
        self.cancels = CancelWatcher(
            redis=redis,
            keys=keys,
            store=CancelStore(store.pool),
            worker_id=self.worker_id,
            on_cancel=self.request_cancel,
        )
        self._crashed: BaseException | None = None
        self.slots = Slots(self.concurrency)
        self._threads = ThreadPoolExecutor(self.concurrency, thread_name_prefix="handler")
        self._stop = asyncio.Event()
        self.jobs_started = 0

    # --- control ------------------------------------------------------------------

    def stop(self) -> None:
        """Stop fetching; in-flight jobs get the grace period to finish."""
        self._stop.set()

    def _crash(self, exc: BaseException) -> None:
        """A side task died: stop fetching; run() then raises WorkerCrashed."""
        if self._crashed is None:
            log.error("worker %s: %s", self.worker_id, exc)
            self._crashed = exc
        self._stop.set()

    def running(self) -> dict[uuid.UUID, InFlight]:
        """A snapshot of the jobs this worker runs now, by id."""
        return dict(self.slots.jobs)

    @property
    def in_flight(self) -> int:
        return len(self.slots.jobs)

    def request_cancel(self, job_id: uuid.UUID) -> None:
        """An operator cancelled this job while it runs here: stop it (InFlight.stop);
        whatever its handler then does, the job is recorded `cancelled`."""
        entry = self.slots.jobs.get(job_id)
        handler = self.registry.get(entry.job.queue_name) if entry is not None else None
        if entry is not None and entry.stop(is_async=handler is not None and handler.is_async):
            with bound_job(job_id, entry.job.queue_name, entry.claim.attempt, self.worker_id):
                log.info("job %s: cancel requested, stopping it", job_id)

    async def run(self) -> None:
        mode = " (burst)" if self.burst else ""
        queues = ", ".join(self.queues)
        log.info(
            "worker %s serving %s, concurrency %d%s", self.worker_id, queues, self.concurrency, mode
        )
        self.recorder.start()
        heartbeat_stop = asyncio.Event()
        heartbeat = asyncio.create_task(beat_until(self, heartbeat_stop), name="worker-heartbeat")
        heartbeat.add_done_callback(
            lambda t: (
                None
                if heartbeat_stop.is_set()
                else self._crash(WorkerCrashed("the heartbeat task ended unexpectedly"))
            )
        )
        # Cancels also arrive by the heartbeat's poll: the listener only makes them fast.
        listener = asyncio.create_task(
            self.cancels.listen(heartbeat_stop), name="worker-cancel-listener"
        )
        try:
            await self._fetch_loop()
        finally:
            await self._shutdown()
            self._threads.shutdown(wait=False, cancel_futures=True)
            # Stop by event, not by cancel: on Python 3.11, asyncio.wait_for (used inside
            # redis-py) can swallow a cancellation that lands as the call completes, and
            # the loop would then beat forever.
            heartbeat_stop.set()
            await heartbeat
            # The listener may be inside a read of up to LISTEN_TIMEOUT: don't wait it out.
            listener.cancel()
            await asyncio.wait([listener], timeout=HANDLER_CANCEL_WAIT)
            with contextlib.suppress(Exception):
                await self.redis.delete(self.keys.worker_heartbeat(self.worker_id))
                await self.redis.zrem(self.keys.workers_index(), self.worker_id)
            log.info("worker %s stopped", self.worker_id)
        if self._crashed is not None:
            raise WorkerCrashed(f"worker {self.worker_id}: {self._crashed}") from self._crashed

    # --- fetching -----------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        backoff = Backoff()
        while not self._stop.is_set():
            free = self.slots.free()
            if free <= 0:
                self.slots.freed.clear()
                await wait_any(self.slots.freed, self._stop)
                continue
            if free < self.slots.refill_at and self.slots.jobs:
                # Busy: give a few more jobs REFILL_WAIT to finish, so that one pop, one
                # claim and one cache write serve all of their slots.
                self.slots.refilled.clear()
                await wait_any(self.slots.refilled, self._stop, timeout=REFILL_WAIT)
                if self._stop.is_set():
                    break
                free = self.slots.free()
            try:
                popped = await self.fetcher.pop(free)
                if not popped and not self.burst:
                    timeout = self.settings.worker_fetch_timeout
                    popped = await self.fetcher.wait_and_pop(free, timeout)
                backoff.reset()
            except Exception as exc:
                # Unreachable, or read-only after a failover (ReadOnlyError), or any other
                # error: never a reason to stop serving. Wait and look again.
                delay = backoff.next()
                log.warning("could not pop from Redis (%r); retrying in %.1fs", exc, delay)
                await wait_any(self._stop, timeout=delay)
                continue
            if not popped:
                if self.burst:
                    if not self.slots.jobs:
                        return
                    self.slots.freed.clear()
                    await wait_any(self.slots.freed, self._stop)
                continue
            await self._claim_and_start(popped)

    async def _claim_and_start(self, popped: list[Popped]) -> None:
        by_id, entry_of, dropped = sort_popped(popped)
        claims = await self._claim(list(by_id)) if by_id else []
        if claims is None:
            # Given up (lock timeout, or PostgreSQL away too long): the in-flight
            # entries stay, and the recovery pushes the copies back.
            await self.fetcher.forget_now(dropped)
            return
        won = {c.id for c in claims}
        for job_id in by_id.keys() - won:
            dropped.append(entry_of[job_id])
            with bound_job(job_id, by_id[job_id].get("queue_name"), None, self.worker_id):
                log.debug(
                    "dropping copy of job %s: its claim failed (not migrated_to_redis)", job_id
                )

        # Handlers start first; the job hashes are written while they run.
        for c in claims:
            data = by_id[c.id]
            job = Job(
                id=c.id,
                queue_name=data["queue_name"],
                payload=data["payload"],
                attempt=c.attempt,
                max_attempts=c.max_attempts,
                priority=data["priority"],
            )
            self.recorder.track(c.id, entry_of[c.id])
            task = asyncio.create_task(self._execute(c, job), name=f"job-{c.id}")
            self.slots.jobs[c.id] = InFlight(
                claim=c, job=job, task=task, started_at=datetime.now(UTC), popped=entry_of[c.id]
            )
            self.jobs_started += 1
            task.add_done_callback(functools.partial(self._finished, c.id))
        # Yield once: each handler runs up to its first await before the job hashes are
        # built and sent (the trace of an idle pop showed ~0.2 ms from claim to start).
        await asyncio.sleep(0)

        try:
            async with redis_batch(self.redis) as pipe:
                self.fetcher.forget(pipe.pipe, dropped)
                for c in claims:
                    self.state.running(pipe, c.id, self.worker_id, c.started_at, c.attempt)
                    queue = by_id[c.id]["queue_name"]
                    self.metrics.count(pipe, "started", queue)
                    if c.run_at is not None:
                        wait = (c.started_at - c.run_at).total_seconds()
                        self.metrics.observe(pipe, "wait_seconds", queue, wait)
        except Exception:
            log.warning("could not update job hashes in Redis", exc_info=True)

    async def _claim(self, job_ids: list[uuid.UUID]) -> list[Claim] | None:
        """Claim, retrying while PostgreSQL is unreachable, for at most the visibility
        timeout; None when given up (the copies are then the in-flight recovery's)."""
        backoff = Backoff()
        deadline = time.monotonic() + self.settings.visibility_timeout
        while True:
            try:
                return await self.store.claim(
                    job_ids,
                    self.worker_id,
                    self.settings.visibility_timeout,
                    self.settings.claim_lock_timeout,
                )
            except (asyncpg.LockNotAvailableError, TimeoutError) as exc:
                # A migrator holds these rows and does not commit (hung, or its host
                # gone): do not wait for it; fetch other jobs.
                log.warning("claim of %d jobs gave up on a lock (%r)", len(job_ids), exc)
                return None
            except Exception as exc:
                if self._stop.is_set() or time.monotonic() > deadline:
                    log.error("could not claim %d jobs: %s; left to recovery", len(job_ids), exc)
                    return None
                delay = backoff.next()
                log.warning("claim failed (%s); retrying in %.1fs", exc, delay)
                await wait_any(self._stop, timeout=delay)

    def _expire(self, job_id: uuid.UUID) -> None:
        entry = self.slots.jobs.get(job_id)
        if entry is not None:
            entry.expire()

    def _finished(self, job_id: uuid.UUID, _task: asyncio.Task[None]) -> None:
        self.slots.finished(job_id)

    # --- running ------------------------------------------------------------------

    async def _execute(self, claim: Claim, job: Job) -> None:
        # This task's own context: every line logged while it runs names the job.
        set_job_context(job.id, job.queue_name, claim.attempt, self.worker_id)
        handler = self.registry.get(job.queue_name)
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        error: str | None = None
        reported: PermanentFailure | Snooze | None = None
        entry = self.slots.jobs.get(job.id)
        if entry is not None:
            entry.started = True
        if handler is None:
            error = f"no handler registered for queue {job.queue_name!r}"
        elif entry is not None and entry.cancel_requested:
            pass  # cancelled before its handler started: it never will
        else:
            timeout = handler.timeout or self.settings.handler_timeout
            # One timer per job, which cancels the task when it fires (InFlight.expire):
            # asyncio.timeout costs several times more per job than a bare timer handle.
            timer = asyncio.get_running_loop().call_later(timeout, self._expire, job.id)
            try:
                # Sensitive fields are decrypted only here, for the handler.
                payload = self.cipher.decrypt(job.queue_name, job.payload)
                if payload is not job.payload:
                    job = replace(job, payload=payload)
                result = await self._call(handler, job)
                # A handler may return an outcome as well as raise it.
                if isinstance(result, PermanentFailure | Snooze):
                    reported = result
            except (PermanentFailure, Snooze) as exc:
                reported = exc
            except asyncio.CancelledError:
                if entry is None or not (entry.cancel_requested or entry.timed_out):
                    raise
                # Our own cancel of the handler: this task goes on to record it.
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            finally:
                timer.cancel()
            if entry is not None and entry.timed_out:
                # Stopped by its timeout: whatever it did when cancelled (re-raised,
                # returned, raised something else), the attempt failed.
                reported = None
                error = f"TimeoutError: handler ran longer than {timeout:g}s"
        finished = datetime.now(UTC)
        if entry is not None:
            self.slots.returned(entry)
        log.debug(
            "job %s attempt %d ran %.1f ms", job.id, claim.attempt, (time.perf_counter() - t0) * 1e3
        )
        if error is not None and not (entry is not None and entry.cancel_requested):
            log.info(
                "job %s attempt %d/%d failed: %s", job.id, claim.attempt, claim.max_attempts, error
            )
        outcome = outcome_of(
            claim,
            job,
            started,
            finished,
            cancelled=entry is not None and entry.cancel_requested,
            reported=reported,
            error=error,
            settings=self.settings,
        )
        await self.recorder.record(outcome)

    async def _call(self, handler: Handler, job: Job) -> Any:
        if handler.is_async:
            return await handler.func(job)
        # A plain function runs in a thread so it cannot block the event loop: a pool as
        # large as the concurrency, so a sync handler never waits for a thread. A thread
        # cannot be killed: past its timeout the attempt fails, the thread runs on.
        # The thread runs in a copy of this task's context, so the handler's log lines
        # carry the job's id like an async handler's.
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        return await loop.run_in_executor(self._threads, context.run, handler.func, job)

    # --- shutdown -----------------------------------------------------------------

    async def _shutdown(self) -> None:
        tasks = [f.task for f in self.slots.jobs.values()]
        if tasks:
            log.info(
                "waiting up to %.0fs for %d in-flight jobs",
                self.settings.shutdown_grace_period,
                len(tasks),
            )
            await asyncio.wait(tasks, timeout=self.settings.shutdown_grace_period)
        unfinished = list(self.slots.jobs.values())
        for f in unfinished:
            f.task.cancel()
        if unfinished:
            await asyncio.wait([f.task for f in unfinished], timeout=HANDLER_CANCEL_WAIT)
        await self.recorder.close()
        if unfinished:
            try:
                released = await self.store.release(
                    self.worker_id,
                    [(f.claim.id, f.claim.attempt, f.started_at) for f in unfinished],
                )
                async with redis_batch(self.redis) as pipe:
                    self.fetcher.forget(
                        pipe.pipe, [f.popped for f in unfinished if f.claim.id in released]
                    )
                    for f in unfinished:
                        if f.claim.id in released:
                            self.state.requeued(pipe, f.claim.id, f.claim.attempt - 1)
                log.warning("handed back %d unfinished jobs", len(released))
            except Exception:
                log.exception("could not hand back unfinished jobs; their leases will expire")
