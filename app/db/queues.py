"""Queues: their settings (default priority, paused or active, limits)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import asyncpg

from app.db.rows import QueueRow

LIMIT_FIELDS: Final = ("rate_limit", "max_running", "max_running_per_key")


@dataclass(frozen=True, slots=True)
class QueueLimitSettings:
    """Limits to write; `given` names the nullable ones to change (None clears them)."""

    rate_limit: int | None = None
    rate_period: float | None = None
    max_running: int | None = None
    max_running_per_key: int | None = None
    given: frozenset[str] = field(default_factory=frozenset)


_QUEUE_COLUMNS = (
    "name, default_priority, is_active, created, rate_limit, rate_period, max_running, "
    "max_running_per_key"
)

LIST_QUEUES = f"""
SELECT {_QUEUE_COLUMNS} FROM job_queues
WHERE ($1::text IS NULL OR name > $1)
ORDER BY name
LIMIT $2
"""

GET_QUEUE = f"SELECT {_QUEUE_COLUMNS} FROM job_queues WHERE name = $1"

CREATE_QUEUE = f"""
INSERT INTO job_queues (name, default_priority, is_active, rate_limit, rate_period,
                        max_running, max_running_per_key)
VALUES ($1, COALESCE($2::int, 100), COALESCE($3::bool, true), $4::int,
        COALESCE($5::float8, 1.0), $6::int, $7::int)
ON CONFLICT (name) DO NOTHING
RETURNING {_QUEUE_COLUMNS}
"""

# A limit is changed only when its name is in $8 (so null can clear it).
UPDATE_QUEUE = f"""
UPDATE job_queues SET
    default_priority = COALESCE($2::int, default_priority),
    is_active = COALESCE($3::bool, is_active),
    rate_limit = CASE WHEN 'rate_limit' = ANY($8::text[]) THEN $4::int ELSE rate_limit END,
    rate_period = COALESCE($5::float8, rate_period),
    max_running = CASE WHEN 'max_running' = ANY($8::text[]) THEN $6::int ELSE max_running END,
    max_running_per_key = CASE WHEN 'max_running_per_key' = ANY($8::text[]) THEN $7::int
                               ELSE max_running_per_key END
WHERE name = $1
RETURNING {_QUEUE_COLUMNS}
"""


class QueueStore:
    """Queue settings over a pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def list_queues(self, *, after: str | None, limit: int) -> list[QueueRow]:
        return [QueueRow(**dict(r)) for r in await self.pool.fetch(LIST_QUEUES, after, limit)]

    async def get_queue(self, name: str) -> QueueRow | None:
        row = await self.pool.fetchrow(GET_QUEUE, name)
        return QueueRow(**dict(row)) if row is not None else None

    async def create_queue(
        self,
        name: str,
        default_priority: int | None,
        is_active: bool | None,
        limits: QueueLimitSettings | None = None,
    ) -> QueueRow | None:
        """None when a queue of this name exists."""
        lim = limits or QueueLimitSettings()
        row = await self.pool.fetchrow(
            CREATE_QUEUE,
            name,
            default_priority,
            is_active,
            lim.rate_limit,
            lim.rate_period,
            lim.max_running,
            lim.max_running_per_key,
        )
        return QueueRow(**dict(row)) if row is not None else None

    async def update_queue(
        self,
        name: str,
        default_priority: int | None,
        is_active: bool | None,
        limits: QueueLimitSettings | None = None,
    ) -> QueueRow | None:
        """None when there is no such queue. Of `limits`, only the fields named in its
        `given` change (None there clears a limit)."""
        lim = limits or QueueLimitSettings()
        row = await self.pool.fetchrow(
            UPDATE_QUEUE,
            name,
            default_priority,
            is_active,
            lim.rate_limit,
            lim.rate_period,
            lim.max_running,
            lim.max_running_per_key,
            sorted(lim.given),
        )
        return QueueRow(**dict(row)) if row is not None else None

    async def set_limits(
        self,
        name: str,
        *,
        rate_limit: int | None = None,
        rate_period: float = 1.0,
        max_running: int | None = None,
        max_running_per_key: int | None = None,
    ) -> QueueRow | None:
        """Set every limit of a queue in code (None: no such limit); None when there is
        no such queue. The migrator applies them from its next pass."""
        limits = QueueLimitSettings(
            rate_limit=rate_limit,
            rate_period=rate_period,
            max_running=max_running,
            max_running_per_key=max_running_per_key,
            given=frozenset(LIMIT_FIELDS),
        )
        return await self.update_queue(name, None, None, limits)
