"""One batcher for every "many callers, one statement" path: the POST /jobs group commit
and the worker's outcome recorder.

Callers `submit` an item and wait for its own result. A single flusher task takes what
is waiting (at most `max_items`; after the first item, it may wait up to `max_wait`
seconds for more) and runs `flush` once for all of it. `flush` answers each item with a
result or an exception of its own. If `flush` itself raises, the batch either fails
(every waiter gets that error: `retry=False`), or goes back to the front of the queue
and is tried again after a backoff (`retry=True`: for work that must not be lost, like
an outcome PostgreSQL could not take yet). While a flush is in flight the next items
gather for the following one, so an idle caller adds no delay and a busy one shares a
round trip with its neighbours.

`after_flush`, if given, runs once the waiters of a batch are answered (e.g. cache
writes that must not delay them); its errors are logged, never raised to callers.

If the flusher task itself dies (a bug, an error outside `flush`), every waiter gets the
error instead of waiting forever, later submits are refused, and `on_crash` is called so
the owner can stop (the worker does: it cannot record outcomes any more).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from app.loops import Backoff

log = logging.getLogger("hybridq.batcher")

T = TypeVar("T")
R = TypeVar("R")

Flush = Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]
AfterFlush = Callable[[list[T], Sequence[R | BaseException]], Awaitable[None]]


class BatcherClosed(RuntimeError):
    """The batcher was closed: it takes no more items."""


@dataclass(slots=True)
class _Waiting(Generic[T, R]):
    item: T
    done: asyncio.Future[R] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Batcher(Generic[T, R]):
    """Collects items and runs one `flush` per batch; see the module's docstring."""

    def __init__(
        self,
        flush: Flush[T, R],
        *,
        name: str,
        max_items: int = 1000,
        max_wait: float = 0.0,
        retry: bool = False,
        after_flush: AfterFlush[T, R] | None = None,
        backoff: Backoff | None = None,
        on_crash: Callable[[BaseException], None] | None = None,
    ) -> None:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        self._flush = flush
        self.name = name
        self.max_items = max_items
        self.max_wait = max_wait
        self.retry = retry
        self._after_flush = after_flush
        self._on_crash = on_crash
        self._backoff = backoff or Backoff()
        self._waiting: list[_Waiting[T, R]] = []
        self._flushing: list[_Waiting[T, R]] = []  # the batch in flight
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Items submitted and not yet answered (including a batch in flight)."""
        return len(self._waiting) + len(self._flushing)

    def start(self) -> None:
        """Start the flusher task (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"batcher-{self.name}")
            self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        assert exc is not None
        log.error("%s: the flusher died", self.name, exc_info=exc)
        self._closing = True
        for waiting in [*self._flushing, *self._waiting]:
            if not waiting.done.done():
                waiting.done.set_exception(exc)
        self._flushing = []
        self._waiting.clear()
        if self._on_crash is not None:
            self._on_crash(exc)

    async def submit(self, item: T) -> R:
        """Hand over one item; its own result (or exception) once its batch is flushed."""
        if self._closing:
            raise BatcherClosed(f"{self.name} is closed")
        if self._task is None or self._task.done():
            raise BatcherClosed(f"{self.name} is not running")
        waiting: _Waiting[T, R] = _Waiting(item)
        self._waiting.append(waiting)
        self._wake.set()
        return await waiting.done

    async def close(self, timeout: float) -> bool:
        """Flush what is waiting, then stop; True if everything was answered. After
        `timeout` seconds the rest is abandoned: its waiters get BatcherClosed."""
        self._closing = True
        self._wake.set()
        if self._task is None:
            return not self._waiting
        done, _ = await asyncio.wait({self._task}, timeout=timeout)
        if done:
            return True
        log.error("%s: %d items not flushed before the deadline", self.name, self.pending)
        self.abandon()
        return False

    def abandon(self) -> None:
        """Stop now without flushing; every waiter gets BatcherClosed."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
        for waiting in [*self._flushing, *self._waiting]:
            if not waiting.done.done():
                waiting.done.set_exception(BatcherClosed(f"{self.name} was abandoned"))
        self._flushing = []
        self._waiting.clear()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._waiting:
                await self._gather()
                batch = self._waiting[: self.max_items]
                del self._waiting[: self.max_items]
                self._flushing = batch
                try:
                    ok = await self._flush_batch(batch)
                except BaseException:
                    self._waiting[:0] = batch  # answered by _ended (or abandon)
                    raise
                finally:
                    self._flushing = []
                if not ok:
                    self._waiting[:0] = batch  # tried again first, in order
                    await asyncio.sleep(self._backoff.next())
            if self._closing:
                return

    async def _gather(self) -> None:
        """Give late items up to `max_wait` seconds to join a batch that is not full."""
        if self.max_wait <= 0 or self._closing:
            return
        deadline = time.monotonic() + self.max_wait
        while len(self._waiting) < self.max_items:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), left)

    async def _flush_batch(self, batch: list[_Waiting[T, R]]) -> bool:
        """False if the batch must be tried again (retry mode and `flush` raised)."""
        items = [w.item for w in batch]
        try:
            results = await self._flush(items)
        except Exception as exc:
            if self.retry:  # a retried batch keeps retrying: close()'s deadline ends it
                log.warning(
                    "%s: flushing %d items failed (%s); retrying", self.name, len(batch), exc
                )
                return False
            for w in batch:
                if not w.done.done():
                    w.done.set_exception(exc)
            return True
        self._backoff.reset()
        if len(results) != len(batch):
            raise RuntimeError(f"{self.name}: flush answered {len(results)} of {len(batch)}")
        for w, result in zip(batch, results, strict=True):
            if w.done.done():
                continue
            if isinstance(result, BaseException):
                w.done.set_exception(result)
            else:
                w.done.set_result(result)
        if self._after_flush is not None:
            try:
                await self._after_flush(items, results)
            except Exception:
                log.warning("%s: after-flush step failed", self.name, exc_info=True)
        return True
