"""Queues: their settings (default priority, paused or active)."""

from __future__ import annotations

import asyncpg

from app.db.rows import QueueRow

_QUEUE_COLUMNS = "name, default_priority, is_active, created"

LIST_QUEUES = f"""
SELECT {_QUEUE_COLUMNS} FROM job_queues
WHERE ($1::text IS NULL OR name > $1)
ORDER BY name
LIMIT $2
"""

GET_QUEUE = f"SELECT {_QUEUE_COLUMNS} FROM job_queues WHERE name = $1"

CREATE_QUEUE = f"""
INSERT INTO job_queues (name, default_priority, is_active)
VALUES ($1, COALESCE($2::int, 100), COALESCE($3::bool, true))
ON CONFLICT (name) DO NOTHING
RETURNING {_QUEUE_COLUMNS}
"""

UPDATE_QUEUE = f"""
UPDATE job_queues SET
    default_priority = COALESCE($2::int, default_priority),
    is_active = COALESCE($3::bool, is_active)
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
        self, name: str, default_priority: int | None, is_active: bool | None
    ) -> QueueRow | None:
        """None when a queue of this name exists."""
        row = await self.pool.fetchrow(CREATE_QUEUE, name, default_priority, is_active)
        return QueueRow(**dict(row)) if row is not None else None

    async def update_queue(
        self, name: str, default_priority: int | None, is_active: bool | None
    ) -> QueueRow | None:
        """None when there is no such queue."""
        row = await self.pool.fetchrow(UPDATE_QUEUE, name, default_priority, is_active)
        return QueueRow(**dict(row)) if row is not None else None
