"""What became of a handler's run, as the outcome the recorder writes: a success, a
failed attempt (retried after its backoff), a permanent failure or a snooze (what a
handler may report besides returning or raising: app.jobs.outcomes), or a run stopped by
a cancel."""

from __future__ import annotations

from datetime import datetime

from app.backoff import retry_delay
from app.db.rows import CancelledRun, Claim, Failure, PermanentFailed, Snoozed, Success
from app.jobs.outcomes import PermanentFailure, Snooze
from app.registry import Job
from app.settings import Settings

Outcome = Success | Failure | PermanentFailed | Snoozed | CancelledRun

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
            token=claim.token,
        )
    message = str(reported) or "permanent failure"
    return PermanentFailed(
        job_id=job.id,
        attempt=claim.attempt,
        started_at=started,
        finished_at=finished,
        error=_text(f"PermanentFailure: {message}"),
        queue_name=job.queue_name,
        token=claim.token,
    )


def outcome_of(
    claim: Claim,
    job: Job,
    started: datetime,
    finished: datetime,
    *,
    cancelled: bool,
    reported: PermanentFailure | Snooze | None,
    error: str | None,
    settings: Settings,
) -> Outcome:
    """The outcome of one run: stopped by a cancel (whatever the handler did after it),
    an outcome the handler reported, a success, or a failed attempt."""
    if cancelled:
        return CancelledRun(
            job.id, claim.attempt, started, finished, job.queue_name, token=claim.token
        )
    if reported is not None:
        return reported_outcome(reported, claim, job, started, finished)
    if error is None:
        return Success(
            job_id=job.id,
            attempt=claim.attempt,
            started_at=started,
            finished_at=finished,
            queue_name=job.queue_name,
            token=claim.token,
        )
    delay = retry_delay(
        claim.attempt,
        base=settings.backoff_base,
        cap=settings.backoff_max,
        jitter=settings.backoff_jitter,
    )
    return Failure(
        job_id=job.id,
        attempt=claim.attempt,
        started_at=started,
        finished_at=finished,
        error=error[:ERROR_MAX],
        retry_delay=delay,
        queue_name=job.queue_name,
        token=claim.token,
    )
