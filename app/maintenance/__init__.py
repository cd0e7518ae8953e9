"""Maintenance: periodic tasks that run beside the migrator (lease rescue, Redis
reconciliation, retention). Several processes may run them at once: each task is
written so that concurrent runs are safe (conditional UPDATEs, SKIP LOCKED)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from app.loops import wait_any

log = logging.getLogger("hybridq.maintenance")


class PeriodicTask(Protocol):
    """A maintenance task: `run_once` does one bounded pass and says how much it did."""

    name: str
    interval: float

    async def run_once(self) -> int: ...


class Maintenance:
    """Runs each task every `interval` seconds until stopped; an error is logged and the
    task runs again at its next turn."""

    def __init__(self, tasks: list[PeriodicTask]) -> None:
        self.tasks = tasks
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    def wake(self) -> None:
        """Run every task now (e.g. after Redis was found to have lost its data)."""
        self._wake.set()

    async def run(self) -> None:
        if not self.tasks:
            # Still a service: returning would end the process that runs it (the
            # standalone migrator stops as soon as any of its services returns).
            await self._stop.wait()
            return
        next_run = {t.name: 0.0 for t in self.tasks}
        while not self._stop.is_set():
            if self._wake.is_set():
                self._wake.clear()
                next_run = dict.fromkeys(next_run, 0.0)
            now = time.monotonic()
            for task in self.tasks:
                if now < next_run[task.name]:
                    continue
                try:
                    done = await task.run_once()
                    if done:
                        log.info("%s: %d", task.name, done)
                except Exception as exc:
                    log.warning("maintenance task %s failed: %s", task.name, exc)
                next_run[task.name] = time.monotonic() + task.interval
            delay = max(0.0, min(next_run.values()) - time.monotonic())
            await wait_any(self._stop, self._wake, timeout=delay)
