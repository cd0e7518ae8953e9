"""What a handler reported besides returning or raising (app.jobs.outcomes), as the
outcome the recorder writes."""

from __future__ import annotations

from datetime import datetime

from app.db.rows import Claim, PermanentFailed, Snoozed
from app.jobs.outcomes import PermanentFailure, Snooze
from app.registry import Job

ERROR_MAX = 10_000


def reported_outcome(
    reported: PermanentFailure | Snooze,
    claim: Claim,
    job: Job,
    started: datetime,
    finished: datetime,
) -> PermanentFailed | Snoozed:
    """The row for the recorder: a permanent failure fails the job now; a snooze queues
    it again after `seconds` without spending the attempt."""
    if isinstance(reported, Snooze):
        return Snoozed(
            job_id=job.id,
            attempt=claim.attempt,
            started_at=started,
            finished_at=finished,
            seconds=reported.seconds,
            reason=(reported.reason or "snoozed")[:ERROR_MAX],
            queue_name=job.queue_name,
        )
    message = str(reported) or "permanent failure"
    return PermanentFailed(
        job_id=job.id,
        attempt=claim.attempt,
        started_at=started,
        finished_at=finished,
        error=f"PermanentFailure: {message}"[:ERROR_MAX],
        queue_name=job.queue_name,
    )
