"""The direct path: a producer inserts a job that is due now straight as
migrated_to_redis, and pushes it to Redis itself after its commit (app.direct_push),
so an idle queue's job does not wait for the NOTIFY -> migrator -> move round.

Only when the migrator would move the job first anyway: its queue is active, the job is
due, and no due job of the queue is waiting in PostgreSQL (so no job is overtaken, and
a blocked or backlogged queue keeps going through the migrator). Otherwise the row is
an ordinary queued job. A crash between the commit and the push leaves a migrated job
with no copy in Redis: the stale-migrated recovery queues it again, as for a job popped
and never claimed.
"""

from __future__ import annotations

from app.db.fragments import REDIS_MESSAGE

INSERT_DUE_JOB = f"""
INSERT INTO jobs (id, queue_name, payload, priority, run_at, max_attempts, status)
SELECT $1::uuid, q.name, $3::text::jsonb, COALESCE($4::int, q.default_priority),
       COALESCE($5::timestamptz, now()), $6::int,
       CASE WHEN q.is_active AND COALESCE($5::timestamptz, now()) <= now()
                 AND NOT EXISTS (SELECT 1 FROM jobs b
                                 WHERE b.queue_name = q.name AND b.status = 'queued'
                                   AND b.run_at <= now())
            THEN 'migrated_to_redis' ELSE 'queued' END
FROM job_queues q WHERE q.name = $2::text
RETURNING id, status, queue_name, priority, attempt_count, created_at, updated_at,
    CASE WHEN status = 'migrated_to_redis' THEN {REDIS_MESSAGE} END AS message
"""

# The push was refused (the queue's Redis lists are full): the migrator takes it.
REQUEUE_UNPUSHED = """
UPDATE jobs SET status = 'queued', updated_at = now()
WHERE id = $1 AND status = 'migrated_to_redis' AND updated_at = $2
RETURNING id
"""
