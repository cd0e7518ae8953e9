"""What a handler reported besides returning or raising (app.jobs.outcomes), as the
outcome the recorder writes."""

from __future__ import annotations

from datetime import datetime

from app.db.rows import Claim, PermanentFailed, Snoozed
from app.jobs.outcomes import PermanentFailure, Snooze
from app.registry import Job

ERROR_MAX = 10_000
# A snooze longer than this is cut to it: PostgreSQL's intervals and timestamps end
# somewhere, and an outcome that cannot be written would hold up the recorder's batch.
SNOOZE_MAX_SECONDS = 366 * 86_400.0


def _text(value: str) -> str:
    """As PostgreSQL text can hold it (no NUL), at most ERROR_MAX characters."""
    return value.replace("\x00", "")[:ERROR_MAX]


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
            seconds=min(reported.seconds, SNOOZE_MAX_SECONDS),
            reason=_text(reported.reason or "snoozed"),
            queue_name=job.queue_name,
        )
    message = str(reported) or "permanent failure"
    return PermanentFailed(
        job_id=job.id,
        attempt=claim.attempt,
        started_at=started,
        finished_at=finished,
        error=_text(f"PermanentFailure: {message}"),
        queue_name=job.queue_name,
    )
