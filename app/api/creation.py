"""Creating jobs over HTTP: validation (app.api.validation), one transaction, idempotency
keys, and the `created` counter."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from app.api.errors import InputErrors
from app.api.schemas import JobCreate
from app.api.validation import key_conflict_error, seal, to_insert, unknown_queue_error
from app.db.admin_store import AdminStore, InsertResult
from app.metrics import MetricsWriter
from app.runtime import Runtime


async def create_jobs(
    rt: Runtime,
    admin: AdminStore,
    jobs: Sequence[JobCreate],
    keys: Sequence[str | None],
    *,
    locs: Sequence[Sequence[str | int]],
    key_fields: Sequence[str],
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
    created: dict[str, int] = {}
    for r in results:
        if r.outcome == "created" and r.job is not None:
            created[r.job.queue_name] = created.get(r.job.queue_name, 0) + 1
    with contextlib.suppress(Exception):  # a metric never fails a committed request
        await MetricsWriter(rt.keys).count_now(rt.redis, "created", created.items())
    return results
