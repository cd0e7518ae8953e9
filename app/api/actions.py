"""Operator actions on one job (replay, discard, cancel): the conditional UPDATE, then the
job:<id> hash, the metric and a log line; a refused action is a 404 or a 409."""

from __future__ import annotations

import contextlib
import logging
import uuid
from typing import Annotated, Literal

from fastapi import HTTPException, Query, status
from pydantic import BaseModel, ConfigDict

from app.db.rows import ActionRefused, ActionResult
from app.job_state import JobStateCache
from app.jobs.model import REASON_MAX, JobStatus
from app.logs import bound_job
from app.metrics import MetricsWriter
from app.redis_batch import redis_batch
from app.runtime import Runtime

log = logging.getLogger("hybridq.api")

Action = Literal["replay", "discard", "cancel"]

ReasonQuery = Annotated[
    str | None,
    Query(max_length=REASON_MAX, description="Why: written to the job's log with the actor."),
]

_COUNTER = {"replay": "replayed", "discard": "discarded", "cancel": "cancelled"}
_DEFAULT_REASON = {
    "replay": "replayed from the dead letters",
    "discard": "discarded from the dead letters",
    "cancel": "cancelled",
}
_ALLOWED = {
    "replay": "only a failed job can be replayed",
    "discard": "only a failed job can be discarded",
    "cancel": "only a queued or migrated_to_redis job can be cancelled",
}


class ActionOut(BaseModel):
    """The job after an operator's action."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "job_id": "0b9d6f7e-3f7c-4a36-9a51-2f7f1b0e9c11",
                    "queue_name": "email-sending",
                    "status": "queued",
                    "attempt_count": 0,
                }
            ]
        }
    )

    job_id: uuid.UUID
    queue_name: str
    status: JobStatus
    attempt_count: int


async def apply_action(
    rt: Runtime,
    action: Action,
    job_id: uuid.UUID,
    *,
    reason: str | None,
    actor: str,
) -> ActionOut:
    store = rt.actions
    method = {"replay": store.replay, "discard": store.discard, "cancel": store.cancel}[action]
    result = await method(job_id, reason=reason or _DEFAULT_REASON[action], actor=actor)
    if isinstance(result, ActionRefused):
        if result.status is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "job not found")
        raise HTTPException(status.HTTP_409_CONFLICT, f"job is {result.status}: {_ALLOWED[action]}")
    await publish_changes(rt, [result], _COUNTER[action])
    with bound_job(result.id, result.queue_name, result.attempt_count):
        log.info("job %s %s by %s: %s", result.id, _COUNTER[action], actor, reason or "-")
    return ActionOut(
        job_id=result.id,
        queue_name=result.queue_name,
        status=result.status,
        attempt_count=result.attempt_count,
    )


async def publish_changes(rt: Runtime, results: list[ActionResult], counter: str) -> None:
    """Refresh the job:<id> hashes (with the right TTL) and count the action. Redis is a
    cache here: PostgreSQL has already committed, so a Redis failure is only logged."""
    if not results:
        return
    state = JobStateCache(rt.keys, rt.settings.job_hash_ttl)
    metrics = MetricsWriter(rt.keys)
    per_queue: dict[str, int] = {}
    with contextlib.suppress(Exception):
        async with redis_batch(rt.redis) as pipe:
            for r in results:
                state.operator_changed(pipe, r.id, r.status, r.attempt_count)
                per_queue[r.queue_name] = per_queue.get(r.queue_name, 0) + 1
            for queue, n in per_queue.items():
                metrics.count(pipe, counter, queue, n)
        return
    log.warning("could not update %d job hashes in Redis after %s", len(results), counter)
