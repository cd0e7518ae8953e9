"""The generic batcher behind the group commit and the outcome recorder."""

from __future__ import annotations

import asyncio

import pytest

from app.batcher import Batcher, BatcherClosed
from app.loops import Backoff


class Flusher:
    """Records each batch; answers n -> n * 10, an item < 0 with its own error."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.started = asyncio.Event()
        self.fail_next = 0

    async def __call__(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        self.started.set()
        await self.release.wait()
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("database down")
        return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]


async def test_items_waiting_during_a_flush_share_the_next_one() -> None:
    flush = Flusher()
    batcher: Batcher[int, int] = Batcher(flush, name="t")
    batcher.start()
    flush.release.clear()
    first = asyncio.ensure_future(batcher.submit(1))
    await flush.started.wait()
    rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(2, 7)]
    await asyncio.sleep(0)
    flush.release.set()
    assert await first == 10
    assert await asyncio.gather(*rest) == [20, 30, 40, 50, 60]
    assert flush.batches == [[1], [2, 3, 4, 5, 6]]
    assert await batcher.close(1.0)


async def test_max_items_bounds_a_batch_and_max_wait_gathers_late_items() -> None:
    flush = Flusher()
    batcher: Batcher[int, int] = Batcher(flush, name="t", max_items=3, max_wait=0.05)
    batcher.start()
    results = await asyncio.gather(*(batcher.submit(i) for i in range(7)))
    assert results == [i * 10 for i in range(7)]
    assert [len(b) for b in flush.batches] == [3, 3, 1]
    await batcher.close(1.0)


async def test_each_item_gets_its_own_error_the_others_their_result() -> None:
    flush = Flusher()
    batcher: Batcher[int, int] = Batcher(flush, name="t")
    batcher.start()
    ok, bad = await asyncio.gather(batcher.submit(2), batcher.submit(-1), return_exceptions=True)
    assert ok == 20
    assert isinstance(bad, ValueError) and str(bad) == "bad -1"
    await batcher.close(1.0)


async def test_a_failed_flush_fails_every_waiter_unless_retrying() -> None:
    flush = Flusher()
    flush.fail_next = 1
    batcher: Batcher[int, int] = Batcher(flush, name="t")
    batcher.start()
    results = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert await batcher.submit(3) == 30  # the next batch is flushed as usual
    await batcher.close(1.0)


async def test_retry_mode_tries_the_same_batch_again_until_it_is_written() -> None:
    flush = Flusher()
    flush.fail_next = 2
    batcher: Batcher[int, int] = Batcher(
        flush, name="t", retry=True, backoff=Backoff(initial=0.001, cap=0.001)
    )
    batcher.start()
    assert list(await asyncio.gather(batcher.submit(1), batcher.submit(2))) == [10, 20]
    assert sum(b.count(1) for b in flush.batches) == 3  # two failures, then written
    await batcher.close(1.0)


async def test_close_answers_what_is_waiting_then_refuses_new_items() -> None:
    flush = Flusher()
    batcher: Batcher[int, int] = Batcher(flush, name="t")
    batcher.start()
    flush.release.clear()
    waiting = [asyncio.ensure_future(batcher.submit(i)) for i in range(3)]
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(batcher.close(1.0))
    await asyncio.sleep(0)
    flush.release.set()
    assert await closing
    assert [w.result() for w in waiting] == [0, 10, 20]
    with pytest.raises(BatcherClosed):
        await batcher.submit(9)


async def test_close_past_its_deadline_abandons_the_waiters() -> None:
    flush = Flusher()
    flush.release.clear()  # the flush never finishes: a hung database
    batcher: Batcher[int, int] = Batcher(flush, name="t")
    batcher.start()
    waiting = [asyncio.ensure_future(batcher.submit(i)) for i in range(3)]
    await flush.started.wait()
    assert not await batcher.close(0.05)
    for w in waiting:
        with pytest.raises(BatcherClosed):
            await w


async def test_after_flush_runs_once_the_waiters_are_answered_and_its_errors_stay_inside() -> None:
    answered: list[bool] = []
    waiter: asyncio.Future[int] | None = None

    async def after(items: list[int], results: object) -> None:
        assert waiter is not None
        await asyncio.sleep(0)  # this step's own I/O: the waiter has its answer by then
        answered.append(waiter.done())
        raise RuntimeError("cache down")

    batcher: Batcher[int, int] = Batcher(Flusher(), name="t", after_flush=after)
    batcher.start()
    waiter = asyncio.ensure_future(batcher.submit(4))
    assert await waiter == 40
    assert await batcher.submit(5) == 50
    await batcher.close(1.0)
    assert answered == [True, True]


async def test_a_dead_flusher_answers_its_waiters_and_tells_its_owner() -> None:
    """A flusher that dies (here: a flush answering the wrong number of results) must
    not leave callers waiting forever: they get the error, the owner is told (the
    worker then stops), and later items are refused."""
    crashes: list[BaseException] = []

    async def wrong_count(items: list[int]) -> list[int | BaseException]:
        return []

    batcher: Batcher[int, int] = Batcher(wrong_count, name="t", on_crash=crashes.append)
    batcher.start()
    with pytest.raises(RuntimeError, match="answered 0 of 1"):
        await asyncio.wait_for(batcher.submit(1), 5)
    await asyncio.sleep(0)  # the task's done-callback runs on the next loop turn
    assert len(crashes) == 1
    with pytest.raises(BatcherClosed):
        await batcher.submit(2)
