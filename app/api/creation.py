"""Creating jobs over HTTP: validation (app.api.validation), one transaction, idempotency
keys, and the `created` counter. Single-job requests go through a group commit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from app.api.errors import InputErrors
from app.api.schemas import JobCreate
from app.api.validation import key_conflict_error, seal, to_insert, unknown_queue_error
from app.db.admin_store import AdminStore, InsertResult, JobToInsert
from app.metrics import MetricsWriter
from app.runtime import Runtime

log = logging.getLogger("hybridq.api")


@dataclass(slots=True)
class _Waiting:
    row: JobToInsert
    done: asyncio.Future[InsertResult] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class GroupCommit:
    """Concurrent POST /jobs requests share one INSERT and one commit.

    A request hands its row over and waits; a single flusher inserts every row waiting
    at that moment in one statement (each row created, found by its idempotency key, or
    refused on its own) and answers each request after the commit. While a flush is in
    flight the next requests gather for the following one, so an idle API adds no delay
    and a busy one pays one WAL flush per batch instead of per request.
    """

    MAX_BATCH = 1000

    def __init__(self, admin: AdminStore, rt: Runtime) -> None:
        self.admin = admin
        self.rt = rt
        self._waiting: list[_Waiting] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    async def insert(self, row: JobToInsert) -> InsertResult:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="group-commit")
        item = _Waiting(row)
        self._waiting.append(item)
        self._wake.set()
        return await item.done

    async def close(self) -> None:
        """Answer what is waiting, then stop (by a flag: redis-py may swallow a cancel)."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while not self._closing or self._waiting:
            await self._wake.wait()
            self._wake.clear()
            while self._waiting:
                batch = self._waiting[: self.MAX_BATCH]
                del self._waiting[: self.MAX_BATCH]
                try:
                    results = await self.admin.insert_each(
                        [w.row for w in batch], key_ttl=self.rt.settings.idempotency_key_ttl
                    )
                except Exception as exc:  # every request of the batch answers the error
                    for w in batch:
                        if not w.done.done():
                            w.done.set_exception(exc)
                    continue
                for w, result in zip(batch, results, strict=True):
                    if not w.done.done():
                        w.done.set_result(result)
                await count_created(self.rt, results)


async def count_created(rt: Runtime, results: Sequence[InsertResult]) -> None:
    created: dict[str, int] = {}
    for r in results:
        if r.outcome == "created" and r.job is not None:
            created[r.job.queue_name] = created.get(r.job.queue_name, 0) + 1
    with contextlib.suppress(Exception):  # a metric never fails a committed request
        await MetricsWriter(rt.keys).count_now(rt.redis, "created", created.items())


async def create_jobs(
    rt: Runtime,
    admin: AdminStore,
    jobs: Sequence[JobCreate],
    keys: Sequence[str | None],
    *,
    locs: Sequence[Sequence[str | int]],
    key_fields: Sequence[str],
    group: GroupCommit | None = None,
) -> list[InsertResult]:
    """Insert all or nothing. A bad item (unknown queue, idempotency key reused with a
    different request) raises InputErrors listing each one; 409 if all are key reuses."""
    rows = []
    errors = []
    for job, key, loc in zip(jobs, keys, locs, strict=True):
        try:
            rows.append(to_insert(job, key, seal(job, rt.registry, rt.cipher, loc)))
        except InputErrors as exc:
            errors.extend(exc.errors)
    if errors:
        raise InputErrors(422, errors)
    if group is not None and len(rows) == 1:
        results = [await group.insert(rows[0])]  # counted by the group commit
    else:
        results = await admin.insert_jobs(rows, key_ttl=rt.settings.idempotency_key_ttl)
    conflicts = 0
    for job, result, loc, key_field in zip(jobs, results, locs, key_fields, strict=True):
        if result.outcome == "unknown_queue":
            errors.append(unknown_queue_error(job.queue_name, loc))
        elif result.outcome == "key_conflict":
            conflicts += 1
            errors.append(key_conflict_error(loc, key_field))
    if errors:
        raise InputErrors(409 if conflicts == len(errors) else 422, errors)
    if group is None or len(rows) != 1:
        await count_created(rt, results)
    return results
