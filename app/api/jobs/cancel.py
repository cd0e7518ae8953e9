"""Cancelling a job (admin)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from app.api.actions import ActionOut, ReasonQuery, apply_action
from app.api.auth import require
from app.api.common import UNAVAILABLE_EXAMPLES, MessageOut, bad_job_id, documented
from app.api.deps import ActorDep, RuntimeDep

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.post(
    "/{job_id}/cancel",
    response_model=ActionOut,
    dependencies=[require("admin")],
    summary="Cancel a job",
    response_description="The job, now cancelled.",
    description="A queued or migrated_to_redis job becomes cancelled and never runs: a copy "
    "already in Redis is dropped by the worker that pops it (its claim needs "
    "migrated_to_redis). A running or finished job cannot be cancelled (409). Against a "
    "worker's claim exactly one wins.",
    responses={
        404: documented(
            MessageOut, "No job has this id.", {"err": ("Example", {"detail": "job not found"})}
        ),
        409: documented(
            MessageOut,
            "The job is running or finished.",
            {
                "err": (
                    "Example",
                    {
                        "detail": "job is running: only a queued or migrated_to_redis job can be "
                        "cancelled"
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
    job_id: uuid.UUID, rt: RuntimeDep, actor: ActorDep, reason: ReasonQuery = None
) -> ActionOut:
    return await apply_action(rt, "cancel", job_id, reason=reason, actor=actor)
