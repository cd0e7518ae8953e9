"""A job a worker is running: its claim, its handler's task, and whether it was asked
to stop; and the worker's slots, which say how many more jobs it may take."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime

from app.db.rows import Claim
from app.registry import Job
from app.worker.fetch import Popped


@dataclass(slots=True)
class InFlight:
    claim: Claim
    job: Job
    task: asyncio.Task[None]
    started_at: datetime
    popped: Popped  # its in-flight entry in Redis (app.worker.fetch)
    started: bool = False  # its task began (a task cancelled before that never runs)
    recording: bool = False  # the outcome is handed to the recorder
    cancel_requested: bool = False  # an operator cancelled it: stop, record `cancelled`
    timed_out: bool = False  # its handler ran past its timeout: stopped, the attempt fails

    @property
    def _past_stopping(self) -> bool:
        """Finished (its outcome is being recorded), or already asked to stop."""
        return self.recording or self.cancel_requested or self.timed_out

    def stop(self, *, is_async: bool) -> bool:
        """Cancel an async handler's task; raise the flag a sync handler reads
        (`job.cancel_requested`). False if there is nothing to stop: asked already,
        stopped by its timeout, or finished (its outcome is being recorded: the cancel
        comes too late; the recorder then ends the job cancelled)."""
        if self._past_stopping:
            return False
        self.cancel_requested = True
        self.job.cancel_flag.requested = True
        if is_async and self.started:
            self.task.cancel()
        return True

    def expire(self) -> None:
        """The handler's timeout has passed: cancel its task (an async handler stops; a
        sync one's thread runs on, unwaited), unless it already finished or was cancelled."""
        if not self._past_stopping:
            self.timed_out = True
            self.task.cancel()


class Slots:
    """A worker's jobs, from their claim until their outcome is written, and how many
    more it may take: `concurrency` handlers run at once. A job whose handler returned
    leaves its slot while the recorder writes its outcome (a durable commit, batched
    with others'), so a commit's wait does not idle the worker; up to `concurrency`
    such jobs, beyond which each keeps its slot: a PostgreSQL that cannot take the
    outcomes stops the fetching instead of piling them up."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.jobs: dict[uuid.UUID, InFlight] = {}
        self.recording = 0  # jobs whose handler returned, outcome not yet written
        self.freed = asyncio.Event()
        # A busy worker pops when this many slots are free (or after REFILL_WAIT).
        self.refill_at = max(1, concurrency // 2)
        self.refilled = asyncio.Event()

    def free(self) -> int:
        running = len(self.jobs) - self.recording
        return min(self.concurrency - running, 2 * self.concurrency - len(self.jobs))

    def returned(self, entry: InFlight) -> None:
        """Its handler returned: its outcome goes to the recorder, its slot to the next job."""
        entry.recording = True
        self.recording += 1
        self._freed()

    def finished(self, job_id: uuid.UUID) -> None:
        """Its outcome is written (or its task ended otherwise)."""
        entry = self.jobs.pop(job_id, None)
        if entry is not None and entry.recording:
            self.recording -= 1
        self._freed()

    def _freed(self) -> None:
        self.freed.set()
        if self.free() >= self.refill_at:
            self.refilled.set()
