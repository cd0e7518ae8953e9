"""The scheduler: beside every migrator, turns the due ticks of periodic jobs into jobs.

Each pass reads the enabled schedules and, for each, the latest tick at or before now.
A tick after the schedule's last one (and after `ticks_from`) is due: it creates one job
(app.db.schedules FIRE_TICK: exactly one, however many schedulers run). Only the latest
tick is ever considered, so after downtime a schedule runs its missed ticks once, not
once per tick; with SCHEDULE_CATCH_UP=skip a tick found later than SCHEDULE_MISFIRE_GRACE
is passed over instead. The pass sleeps until the next tick of any schedule, at most
SCHEDULER_INTERVAL (so new and changed schedules are seen).

The clock is injectable (`clock`), so tests can walk a schedule across days and DST
changes without waiting.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from app.db.schedules import ScheduleStore
from app.jobs.schedule import Cron
from app.settings import Settings

log = logging.getLogger("hybridq.scheduler")

Clock = Callable[[], datetime]

# Wake this long after a tick, so the clock has passed it when the pass runs.
TICK_MARGIN = 0.005


def utc_now() -> datetime:
    return datetime.now(UTC)


class Scheduler:
    name = "scheduler"

    def __init__(
        self, store: ScheduleStore, settings: Settings, clock: Clock | None = None
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock or utc_now
        self.interval = 0.0  # until the first pass: run at once
        self._crons: dict[tuple[str, str], Cron] = {}

    def _cron(self, expression: str, timezone: str) -> Cron:
        key = (expression, timezone)
        cron = self._crons.get(key)
        if cron is None:
            cron = self._crons[key] = Cron(expression, timezone)
        return cron

    async def run_once(self) -> int:
        """One pass: create the job of every due tick; returns how many were created."""
        now = self.clock()
        created = 0
        wait = self.settings.scheduler_interval
        for schedule in await self.store.enabled():
            try:
                cron = self._cron(schedule.cron, schedule.timezone)
            except ValueError as exc:  # stored before a validation we have now
                log.error("schedule %s: %s; skipped", schedule.name, exc)
                continue
            done = max(schedule.ticks_from, schedule.last_tick or schedule.ticks_from)
            tick = cron.latest(now)
            if tick is not None and tick > done:
                created += await self._due(schedule.name, tick, now)
            upcoming = cron.next_after(now)
            if upcoming is not None:
                wait = min(wait, (upcoming - now).total_seconds() + TICK_MARGIN)
        self.interval = max(TICK_MARGIN, wait)
        return created

    async def _due(self, name: str, tick: datetime, now: datetime) -> int:
        late = (now - tick).total_seconds()
        if (
            self.settings.schedule_catch_up == "skip"
            and late > self.settings.schedule_misfire_grace
        ):
            if await self.store.skip_tick(name, tick):
                log.warning("schedule %s: missed tick %s skipped (%.0fs late)", name, tick, late)
            return 0
        job_id = await self.store.fire_tick(name, tick)
        if job_id is None:
            return 0  # another scheduler took this tick
        if late > self.settings.schedule_misfire_grace:
            log.warning("schedule %s: missed tick %s run once now, job %s", name, tick, job_id)
        else:
            log.info("schedule %s: tick %s, job %s", name, tick, job_id)
        return 1
