"""Cancelling a job (admin): a job that has not started is cancelled at once; a running
one is asked to stop, and its worker ends it `cancelled`."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from typing import Literal

from fastapi import APIRouter, HTTPException, Response, status
from pydantic import ConfigDict, Field

from app.api.actions import ActionOut, ReasonQuery, publish_changes
from app.api.auth import require
from app.api.common import UNAVAILABLE_EXAMPLES, MessageOut, bad_job_id, documented
from app.api.deps import ActorDep, RuntimeDep
from app.db.rows import ActionRefused, CancelRequest
from app.logs import bound_job
from app.runtime import Runtime

log = logging.getLogger("hybridq.api")

router = APIRouter(prefix="/jobs", tags=["jobs"])

DEFAULT_REASON = "cancelled"
_EXAMPLE_ID = "0b9d6f7e-3f7c-4a36-9a51-2f7f1b0e9c11"


class CancelOut(ActionOut):
    """The job after a cancel, and what the cancel did."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "job_id": _EXAMPLE_ID,
                    "queue_name": "email-sending",
                    "status": "cancelled",
                    "attempt_count": 0,
                    "outcome": "cancelled",
                }
            ]
        }
    )

    outcome: Literal["cancelled", "stopped", "requested"] = Field(
        description="`cancelled`: it had not started and never will; `stopped`: it was "
        "running and its worker stopped it; `requested` (202): it is running and the "
        "request is recorded: its worker stops it when it sees it (at once over Redis, "
        "at the latest with its next heartbeat) and the job ends `cancelled`."
    )


def _example(status_: str, attempts: int, outcome: str) -> dict[str, object]:
    return {
        "job_id": _EXAMPLE_ID,
        "queue_name": "email-sending",
        "status": status_,
        "attempt_count": attempts,
        "outcome": outcome,
    }


@router.post(
    "/{job_id}/cancel",
    response_model=CancelOut,
    dependencies=[require("admin")],
    summary="Cancel a job",
    response_description="The job, now cancelled.",
    description="A queued or migrated_to_redis job becomes cancelled and never runs: a copy "
    "already in Redis is dropped by the worker that pops it (its claim needs "
    "migrated_to_redis); against a worker's claim exactly one wins. A running job is asked "
    "to stop: an async handler is cancelled, a sync handler sees `job.cancel_requested`; "
    "the job ends `cancelled` with a job_logs row naming the actor, and any outcome its "
    "handler reports afterwards is discarded. The answer waits up to CANCEL_WAIT seconds "
    "for the worker: 200 `stopped`, or 202 `requested`. A finished job cannot be "
    "cancelled (409).",
    responses={
        200: {
            "description": "Cancelled (it had not started) or stopped (it was running).",
            "content": {
                "application/json": {
                    "examples": {
                        "cancelled": {
                            "summary": "Had not started",
                            "value": _example("cancelled", 0, "cancelled"),
                        },
                        "stopped": {
                            "summary": "Was running: stopped",
                            "value": _example("cancelled", 1, "stopped"),
                        },
                    }
                }
            },
        },
        202: documented(
            CancelOut,
            "Running: the cancel is recorded and its worker has not stopped it yet.",
            {"requested": ("Requested", _example("running", 1, "requested"))},
        ),
        404: documented(
            MessageOut, "No job has this id.", {"err": ("Example", {"detail": "job not found"})}
        ),
        409: documented(
            MessageOut,
            "The job is finished.",
            {
                "err": (
                    "Example",
                    {
                        "detail": "job is completed: only a queued, migrated_to_redis or "
                        "running job can be cancelled"
                    },
                )
            },
        ),
        422: bad_job_id("The id is not a UUID."),
        503: documented(
            MessageOut, "PostgreSQL is unavailable; nothing changed.", UNAVAILABLE_EXAMPLES
        ),
    },
)
async def cancel_job(
    job_id: uuid.UUID,
    rt: RuntimeDep,
    actor: ActorDep,
    response: Response,
    reason: ReasonQuery = None,
) -> CancelOut:
    why = reason or DEFAULT_REASON
    # The job may change state between the two statements (claimed, or finished): try
    # again from its new state a few times.
    for _ in range(3):
        result = await rt.actions.cancel(job_id, reason=why, actor=actor)
        if not isinstance(result, ActionRefused):
            await publish_changes(rt, [result], "cancelled")
            with bound_job(result.id, result.queue_name, result.attempt_count):
                log.info("job %s cancelled by %s: %s", result.id, actor, reason or "-")
            return CancelOut(
                job_id=result.id,
                queue_name=result.queue_name,
                status=result.status,
                attempt_count=result.attempt_count,
                outcome="cancelled",
            )
        if result.status is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "job not found")
        if result.status != "running":
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"job is {result.status}: only a queued, migrated_to_redis or running job "
                "can be cancelled",
            )
        request = await _request_and_wait(rt, job_id, reason=why, actor=actor)
        if request is not None:
            break
    else:
        raise HTTPException(status.HTTP_409_CONFLICT, "job changed state; try again")
    job = await rt.store.get_job(job_id)
    if job is not None and job.status in ("completed", "failed", "discarded"):
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"job is {job.status}: it finished before its worker could stop it",
        )
    if job is not None and job.status == "cancelled":
        outcome: Literal["stopped", "requested"] = "stopped"
    else:
        outcome = "requested"
        response.status_code = status.HTTP_202_ACCEPTED
    return CancelOut(
        job_id=job_id,
        queue_name=request.queue_name,
        status=job.status if job is not None else request.status,
        attempt_count=request.attempt_count,
        outcome=outcome,
    )


async def _request_and_wait(
    rt: Runtime, job_id: uuid.UUID, *, reason: str, actor: str
) -> CancelRequest | None:
    """Record the cancel of a running job, publish it to the workers, and wait
    (CANCEL_WAIT at most) for the one running it to say it stopped it; None if the job
    was not running any more. The answer channel is subscribed before the request is
    recorded, so the worker's answer cannot come too early to be heard. Redis is only
    the fast path: without it the worker reads the request at its next heartbeat."""
    deadline = time.monotonic() + rt.settings.cancel_wait
    async with contextlib.AsyncExitStack() as stack:
        pubsub = None
        try:
            pubsub = await stack.enter_async_context(rt.redis.pubsub())
            await pubsub.subscribe(rt.keys.cancel_ack_channel(str(job_id)))
        except Exception as exc:
            log.warning("cancel of %s: Redis unavailable (%s); workers poll", job_id, exc)
            pubsub = None
        request = await rt.cancels.request(job_id, reason=reason, actor=actor)
        if request is None or pubsub is None:
            return request
        with bound_job(request.id, request.queue_name, request.attempt_count, request.worker_id):
            log.info("job %s: cancel of the running job requested by %s", request.id, actor)
        try:
            if not await rt.redis.publish(rt.keys.cancel_channel(), str(job_id)):
                return request  # no worker listens: none can answer
            while (left := deadline - time.monotonic()) > 0:
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=min(left, 1.0)
                )
                if message is not None:
                    break
        except Exception as exc:
            log.warning("cancel of %s: no answer over Redis (%s)", job_id, exc)
        return request
    return None  # pragma: no cover - the context manager does not swallow errors
