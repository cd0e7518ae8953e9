"""One snapshot of the job counts per process, shared by /metrics, /queues,
/health/queues and the dashboard.

Counting the live statuses reads their partial indexes (app.db.counts): on a table with
a backlog of 100,000 queued jobs that is ~10-30 ms of PostgreSQL per count, which every
scrape, health check and dashboard refresh paid again. Now a process counts at most once
at a time (concurrent callers share the count in progress) and serves the result while it
is younger than STATS_MAX_AGE seconds; past half of that, the next caller starts a new
count in the background and is answered from the snapshot, so a caller waits for a count
only when there is no snapshot young enough (the first call, or after a quiet spell).

Each snapshot says when its count began (`counted_at`): the counts are exact as of then
(or the planner's estimates, `exact` False, when the count took longer than
STATS_TIMEOUT). STATS_MAX_AGE=0 counts at every call (callers that arrive while a count
is in progress still share it).

A count runs as a task of its own, so a caller that gives up (a client that disconnects)
does not cancel it for the others. Its task is started by a caller and ends with its
count: none outlives its count or keeps running in the background. A count that fails is
logged; the callers waiting for it get the error (PostgreSQL unavailable: a 503, as
before), a previous snapshot is still served while it is young enough, and the next
caller starts a new count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from app.db.rows import JobCounts

log = logging.getLogger("hybridq")

# A snapshot older than this fraction of the max age is refreshed in the background.
REFRESH_AFTER = 0.5


@dataclass(frozen=True, slots=True)
class CountsSnapshot:
    counts: JobCounts
    counted_at: datetime  # when its count began (wall clock)
    started: float  # the same instant on the cache's monotonic clock

    def age(self, now: float) -> float:
        return max(0.0, now - self.started)


class CountsCache:
    """The shared snapshot of job counts; see the module's docstring."""

    def __init__(
        self,
        count: Callable[[], Awaitable[JobCounts]],
        *,
        max_age: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._count = count
        self.max_age = max_age
        self._clock = clock
        self._snapshot: CountsSnapshot | None = None
        self._flight: asyncio.Task[CountsSnapshot] | None = None
        self.counts_started = 0  # how many counts this cache ran
        self.last_error: str | None = None  # of the last count, None if it succeeded

    def age_of(self, snapshot: CountsSnapshot) -> float:
        """Seconds since `snapshot`'s count began."""
        return snapshot.age(self._clock())

    async def get(self) -> CountsSnapshot:
        """A snapshot younger than the max age: the current one (refreshed in the
        background past half its max age), else a new count, shared with every caller
        that asks while it runs."""
        snapshot = self._snapshot
        if snapshot is not None:
            age = snapshot.age(self._clock())
            if age < self.max_age:
                if age >= self.max_age * REFRESH_AFTER:
                    self._start()
                return snapshot
        return await asyncio.shield(self._start())

    def _start(self) -> asyncio.Task[CountsSnapshot]:
        """The count in progress, or a new one."""
        if self._flight is None:
            self.counts_started += 1
            self._flight = asyncio.create_task(self._run(), name="job-counts")
            self._flight.add_done_callback(self._finished)
        return self._flight

    async def _run(self) -> CountsSnapshot:
        counted_at = datetime.now(UTC)
        started = self._clock()
        counts = await self._count()
        return CountsSnapshot(counts=counts, counted_at=counted_at, started=started)

    def _finished(self, task: asyncio.Task[CountsSnapshot]) -> None:
        self._flight = None
        if task.cancelled():
            return
        error = task.exception()  # retrieved here, so never "never retrieved"
        if error is not None:
            self.last_error = f"{type(error).__name__}: {error}"[:300]
            log.warning(
                "counting jobs by status failed (%s); the next request counts again",
                self.last_error,
            )
            return
        self.last_error = None
        snapshot = task.result()
        if self._snapshot is None or snapshot.started >= self._snapshot.started:
            self._snapshot = snapshot

    async def settled(self) -> None:
        """Return when no count is in progress (its outcome is the cache's to keep)."""
        flight = self._flight
        if flight is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(flight)
            await asyncio.sleep(0)  # its done callback runs before the caller goes on

    async def close(self) -> None:
        """Cancel a count in progress (before the pool closes under it)."""
        flight = self._flight
        if flight is not None:
            flight.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await flight
