"""SQL fragments that must read the same in several statements, written once.

Each is spliced into its statements with an f-string at import, so every statement is
still one literal that reads (and greps) as SQL in its module.
"""

from __future__ import annotations

from typing import Final

# Every column of a job, in the order of app.db.rows.JobRow.
JOB_COLUMNS: Final = (
    "id, queue_name, status, priority, payload, attempt_count, max_attempts, run_at, "
    "started_at, completed_at, failed_at, last_error_message, worker_id, lease_expires_at, "
    "created_at, updated_at, snooze_count, cancel_requested_at, concurrency_key"
)

# The message a worker pops from Redis (the seed's RedisJobPayload), built in PostgreSQL
# from the row `jobs` as the move leaves it.
REDIS_MESSAGE: Final = """json_build_object(
        'id', jobs.id,
        'queue_name', jobs.queue_name,
        'priority', jobs.priority,
        'payload', jobs.payload,
        'created_at', jobs.created_at,
        'attempt_count', jobs.attempt_count,
        'max_attempts', jobs.max_attempts
    )::text"""

# After a failed attempt of job `j` (its attempt_count already counts the attempt): retry
# after `i.delay` seconds while attempts are left, else fail it (the dead letters).
RETRY_OR_FAIL: Final = """status = CASE WHEN j.attempt_count >= j.max_attempts THEN 'failed'
                      ELSE 'queued' END,
        run_at = CASE WHEN j.attempt_count >= j.max_attempts THEN j.run_at
                      ELSE now() + make_interval(secs => i.delay) END,
        failed_at = CASE WHEN j.attempt_count >= j.max_attempts THEN now() END"""

# The end of a failed attempt's log message, from the row RETRY_OR_FAIL returned.
RETRY_OR_FAIL_NOTE: Final = """CASE WHEN status = 'failed' THEN ' (attempts exhausted)'
                ELSE ' (retry at ' || run_at::text || ')' END"""

# The end of every operator action (replay, discard, cancel): log each changed row of
# `done` (which returns its log status as `action` and the attempt count before the
# change as `previous_attempts`) with the reason $2 and the actor $3, and return the rows.
LOG_ACTION: Final = """logged AS (
    INSERT INTO job_logs (job_id, status, log_message, attempt_number, actor,
                          started_at, finished_at, duration)
    SELECT id, action, $2, previous_attempts, $3, now(), now(), interval '0' FROM done
)
SELECT id, queue_name, status, attempt_count FROM done"""

# The head of an outcome's `input` CTE (its unnest follows): MATERIALIZED, and carrying
# the status the fence expects, which the UPDATE compares as `j.status = i.running`.
# Written as a literal (`j.status = 'running'`), the predicate of idx_jobs_running_lease
# would apply, and with statistics that count few running jobs (a table that grew since
# its last ANALYZE, as every queue's does) PostgreSQL read the whole running index for
# each flush, dead entries included, rescanning the unnest for every row it found: a
# drain of 10,000 jobs read 2 million index entries. So each job is found by its key.
OUTCOME_INPUT: Final = """input AS MATERIALIZED (
    SELECT *, 'running'::text AS running"""
