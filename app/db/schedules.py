"""Schedules of periodic jobs, and the one statement that turns a tick into a job.

A tick makes its job in one statement that inserts the (schedule, tick) row, the job
and the schedule's new last tick together; the primary key of schedule_ticks makes a
second insert of the same tick do nothing, so each tick creates exactly one job however
many schedulers (one beside every migrator) run at once. The schedule row is locked
first, so a second scheduler waits for the first to commit and then finds the tick
taken (its `last_tick` moved on) without even trying the insert.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from app.db.rows import DueSchedule, ScheduleRow
from app.jobs.schedule import ScheduleSpec

_SCHEDULE_COLUMNS = """s.name, s.queue_name, s.cron, s.timezone, s.payload, s.priority,
    s.max_attempts, s.enabled, s.source, s.ticks_from, s.last_tick, s.last_job_id,
    j.status AS last_job_status, s.created_at, s.updated_at"""

LIST_SCHEDULES = f"""
SELECT {_SCHEDULE_COLUMNS}
FROM schedules s LEFT JOIN jobs j ON j.id = s.last_job_id
ORDER BY s.name
"""

GET_SCHEDULE = f"""
SELECT {_SCHEDULE_COLUMNS}
FROM schedules s LEFT JOIN jobs j ON j.id = s.last_job_id
WHERE s.name = $1
"""

INSERT_SCHEDULE = """
INSERT INTO schedules (name, queue_name, cron, timezone, payload, priority, max_attempts,
                       enabled, source)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'api')
ON CONFLICT (name) DO NOTHING
RETURNING name
"""

# Only the fields given change ($9 says whether priority was given: null is a value,
# the queue's default). A new cron expression or time zone, or enabling a disabled
# schedule, starts its ticks afresh from now: no past tick of it runs. Every right-hand
# side reads the row as it was.
UPDATE_SCHEDULE = """
UPDATE schedules SET
    queue_name = COALESCE($2, queue_name),
    cron = COALESCE($3, cron),
    timezone = COALESCE($4, timezone),
    payload = COALESCE($5, payload),
    priority = CASE WHEN $9 THEN $6 ELSE priority END,
    max_attempts = COALESCE($7, max_attempts),
    enabled = COALESCE($8, enabled),
    ticks_from = CASE
        WHEN COALESCE($3, cron) <> cron OR COALESCE($4, timezone) <> timezone
             OR (COALESCE($8, enabled) AND NOT enabled) THEN now()
        ELSE ticks_from END,
    updated_at = now()
WHERE name = $1
RETURNING name
"""

DELETE_SCHEDULE = "DELETE FROM schedules WHERE name = $1 RETURNING name"

# The schedules declared in code, stored at every start of every process: new ones are
# added, changed ones updated (`enabled` stays as an operator set it); unchanged ones
# are not written.
SYNC_CODE_SCHEDULES = """
INSERT INTO schedules AS s (name, queue_name, cron, timezone, payload, priority,
                            max_attempts, source)
SELECT *, 'code' FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[],
                             $6::int[], $7::int[])
ON CONFLICT (name) DO UPDATE SET
    queue_name = EXCLUDED.queue_name,
    cron = EXCLUDED.cron,
    timezone = EXCLUDED.timezone,
    payload = EXCLUDED.payload,
    priority = EXCLUDED.priority,
    max_attempts = EXCLUDED.max_attempts,
    source = 'code',
    ticks_from = CASE WHEN s.cron <> EXCLUDED.cron OR s.timezone <> EXCLUDED.timezone
                      THEN now() ELSE s.ticks_from END,
    updated_at = now()
WHERE (s.queue_name, s.cron, s.timezone, s.payload, s.priority, s.max_attempts, s.source)
    IS DISTINCT FROM (EXCLUDED.queue_name, EXCLUDED.cron, EXCLUDED.timezone,
                      EXCLUDED.payload, EXCLUDED.priority, EXCLUDED.max_attempts, 'code')
"""

ENABLED_SCHEDULES = """
SELECT name, cron, timezone, ticks_from, last_tick FROM schedules WHERE enabled ORDER BY name
"""

# Tick $2 of schedule $1 creates its job (due at the tick), once: see the module's
# docstring. Ticks older than a day are pruned as new ones come (the scheduler never
# looks further back than the schedule's last tick).
FIRE_TICK = """
WITH s AS (
    SELECT s.name, s.queue_name, s.payload, s.max_attempts,
           COALESCE(s.priority, q.default_priority) AS priority
    FROM schedules s JOIN job_queues q ON q.name = s.queue_name
    WHERE s.name = $1 AND s.enabled AND (s.last_tick IS NULL OR s.last_tick < $2)
    FOR UPDATE OF s FOR KEY SHARE OF q
), tick AS (
    INSERT INTO schedule_ticks (schedule_name, tick, job_id)
    SELECT name, $2, gen_random_uuid() FROM s
    ON CONFLICT (schedule_name, tick) DO NOTHING
    RETURNING schedule_name, tick, job_id
), job AS (
    INSERT INTO jobs (id, queue_name, payload, priority, max_attempts, run_at)
    SELECT t.job_id, s.queue_name, s.payload, s.priority, s.max_attempts, t.tick
    FROM tick t JOIN s ON s.name = t.schedule_name
    RETURNING id
), marked AS (
    UPDATE schedules SET last_tick = $2, last_job_id = job.id, updated_at = now()
    FROM job WHERE schedules.name = $1
), pruned AS (
    DELETE FROM schedule_ticks
    WHERE schedule_name = $1 AND tick < $2 - interval '1 day' AND EXISTS (SELECT FROM job)
)
SELECT id FROM job
"""

# A missed tick passed over (SCHEDULE_CATCH_UP=skip): no job, but it counts as done.
SKIP_TICK = """
UPDATE schedules SET last_tick = $2, updated_at = now()
WHERE name = $1 AND enabled AND (last_tick IS NULL OR last_tick < $2)
RETURNING name
"""


def _schedule(row: Any) -> ScheduleRow:
    return ScheduleRow(**dict(row))


class ScheduleStore:
    """The schedules table and its ticks, over a pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def all(self) -> list[ScheduleRow]:
        return [_schedule(r) for r in await self.pool.fetch(LIST_SCHEDULES)]

    async def get(self, name: str) -> ScheduleRow | None:
        row = await self.pool.fetchrow(GET_SCHEDULE, name)
        return _schedule(row) if row is not None else None

    async def create(
        self,
        *,
        name: str,
        queue_name: str,
        cron: str,
        timezone: str,
        payload: dict[str, Any],
        priority: int | None,
        max_attempts: int,
        enabled: bool,
    ) -> bool:
        """False if a schedule of this name exists. An unknown queue raises
        asyncpg.ForeignKeyViolationError."""
        created = await self.pool.fetchval(
            INSERT_SCHEDULE,
            name,
            queue_name,
            cron,
            timezone,
            payload,
            priority,
            max_attempts,
            enabled,
        )
        return created is not None

    async def update(self, name: str, changes: dict[str, Any]) -> bool:
        """Apply the given fields; False if there is no such schedule."""
        updated = await self.pool.fetchval(
            UPDATE_SCHEDULE,
            name,
            changes.get("queue_name"),
            changes.get("cron"),
            changes.get("timezone"),
            changes.get("payload"),
            changes.get("priority"),
            changes.get("max_attempts"),
            changes.get("enabled"),
            "priority" in changes,
        )
        return updated is not None

    async def delete(self, name: str) -> bool:
        return await self.pool.fetchval(DELETE_SCHEDULE, name) is not None

    async def sync_code(
        self, specs: Sequence[ScheduleSpec], payloads: Sequence[dict[str, Any]]
    ) -> None:
        """Store the schedules declared in code (their queues must exist), with their
        payloads as stored (`payloads`, sealed)."""
        if not specs:
            return
        await self.pool.execute(
            SYNC_CODE_SCHEDULES,
            [s.name for s in specs],
            [s.queue_name for s in specs],
            [s.cron.expression for s in specs],
            [s.cron.timezone for s in specs],
            list(payloads),
            [s.priority for s in specs],
            [s.max_attempts for s in specs],
        )

    async def enabled(self) -> list[DueSchedule]:
        rows = await self.pool.fetch(ENABLED_SCHEDULES)
        return [DueSchedule(**dict(r)) for r in rows]

    async def fire_tick(self, name: str, tick: datetime) -> Any:
        """Create the tick's job; its id, or None if the tick was taken already."""
        return await self.pool.fetchval(FIRE_TICK, name, tick)

    async def skip_tick(self, name: str, tick: datetime) -> bool:
        """Mark a missed tick done without a job."""
        return await self.pool.fetchval(SKIP_TICK, name, tick) is not None
