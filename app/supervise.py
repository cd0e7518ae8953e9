"""Supervision of the background services (invariant 10): none ends silently.

Each service (worker, migrator, maintenance) runs under a supervisor task. One that ends
unexpectedly (an exception, or a return while nobody asked it to stop) is either
restarted with backoff (`restart=True`: the API embeds them, and must go on serving
requests; a worker is rebuilt fresh, with a new id, recorder and heartbeat), or stops the
process (`restart=False`: the standalone `python -m app.worker` and `python -m
app.migrator`, which then exit 1 so their own supervisor, compose's `restart:
unless-stopped` or systemd, starts them again with fresh pools; after a Redis failover,
new connections are the cure). `health()` names each service's state; /health/ready
answers 503 while one is down.

Inside the worker, the heartbeat and the outcome recorder are its side tasks: if either
dies the worker stops fetching and ends with WorkerCrashed (it could no longer renew
leases or record outcomes), and the rule above applies to the worker. The migrator's
LISTEN connection is re-made by its own loop whenever it is found closed (a lost
listener only delays moves up to MIGRATOR_POLL_INTERVAL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from app.loops import Backoff, wait_any

log = logging.getLogger("hybridq")

# Seconds beyond SHUTDOWN_GRACE_PERIOD that a stopping process gives its tasks to hand
# unfinished jobs back (cancel handlers, flush outcomes, release): the worker's own
# deadlines (app.worker.runner.HANDLER_CANCEL_WAIT, RECORDER_CLOSE_TIMEOUT) fit in it.
# docker/compose.yaml's stop_grace_period must leave room for it.
HAND_BACK_ALLOWANCE = 15.0
# Restart delays of a crashed service: doubling from the first, capped.
RESTART_BACKOFF = (0.5, 30.0)


class Service(Protocol):
    def run(self) -> Awaitable[None]: ...

    def stop(self) -> None: ...


@dataclass(slots=True)
class _Entry:
    name: str
    service: Service
    rebuild: Callable[[], Service] | None  # a fresh service for a restart
    ends_by_itself: bool = False  # a burst worker's return is not a crash
    state: str = "ok"
    restarts: int = 0


class ServiceCrashed(RuntimeError):
    """A background service ended unexpectedly and is not restarted."""


class Supervisor:
    """Runs services as supervised tasks; see the module's docstring."""

    def __init__(self, *, restart: bool) -> None:
        self.restart = restart
        self._entries: list[_Entry] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    def add(
        self,
        name: str,
        service: Service,
        rebuild: Callable[[], Service] | None = None,
        *,
        ends_by_itself: bool = False,
    ) -> None:
        self._entries.append(_Entry(name, service, rebuild, ends_by_itself))

    def service(self, name: str) -> Service | None:
        return next((e.service for e in self._entries if e.name == name), None)

    def health(self) -> dict[str, str]:
        """Each service's state: "ok", or "error: ..." while it is down."""
        return {e.name: e.state for e in self._entries}

    def start(self) -> None:
        for entry in self._entries:
            self._tasks.append(asyncio.create_task(self._supervise(entry), name=entry.name))

    def stop(self) -> None:
        self._stopping.set()
        for entry in self._entries:
            entry.service.stop()

    async def _supervise(self, entry: _Entry) -> None:
        backoff = Backoff(*RESTART_BACKOFF)
        while True:
            error: BaseException | None = None
            try:
                await entry.service.run()
            except Exception as exc:
                error = exc
            if self._stopping.is_set() and error is None:
                return
            if error is None and entry.ends_by_itself:
                return
            reason = f"{type(error).__name__}: {error}" if error else "ended unexpectedly"
            entry.state = f"error: {reason}"[:300]
            if not self.restart:
                log.error("%s stopped: %s", entry.name, reason, exc_info=error)
                raise ServiceCrashed(f"{entry.name} stopped: {reason}") from error
            delay = backoff.next()
            log.error(
                "%s stopped (%s); restarting in %.1fs", entry.name, reason, delay, exc_info=error
            )
            await wait_any(self._stopping, timeout=delay)
            if self._stopping.is_set():
                return
            if entry.rebuild is not None:
                entry.service = entry.rebuild()
            entry.restarts += 1
            entry.state = "ok"

    async def wait(self) -> None:
        """Wait until every service returned; re-raise the first crash."""
        if self._tasks:
            results = await asyncio.gather(*self._tasks, return_exceptions=True)
            for r in results:
                if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
                    raise r

    async def wait_first(self) -> None:
        """Return when any service task ends (a crash, or a burst worker that finished)."""
        if self._tasks:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)

    async def shutdown(self, grace: float) -> None:
        self.stop()
        if not self._tasks:
            return
        # Workers wait `grace` for in-flight jobs, then hand back.
        _done, pending = await asyncio.wait(self._tasks, timeout=grace + HAND_BACK_ALLOWANCE)
        for t in pending:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                exc = t.exception() if t.done() and not t.cancelled() else None
                if exc is not None:
                    log.error("%s crashed", t.get_name(), exc_info=exc)
