"""A job a worker is running: its claim, its handler's task, and whether it was asked
to stop."""

from __future__ import annotations

import asyncio
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

    def stop(self, *, is_async: bool) -> bool:
        """Cancel an async handler's task; raise the flag a sync handler reads
        (`job.cancel_requested`). False if there is nothing to stop: asked already,
        stopped by its timeout, or finished (its outcome is being recorded: the cancel
        comes too late; the recorder then ends the job cancelled)."""
        if self.recording or self.cancel_requested or self.timed_out:
            return False
        self.cancel_requested = True
        self.job.cancel_flag.requested = True
        if is_async and self.started:
            self.task.cancel()
        return True

    def expire(self) -> None:
        """The handler's timeout has passed: cancel its task (an async handler stops; a
        sync one's thread runs on, unwaited), unless it already finished or was cancelled."""
        if not (self.recording or self.cancel_requested or self.timed_out):
            self.timed_out = True
            self.task.cancel()
