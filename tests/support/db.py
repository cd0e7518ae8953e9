"""Looking at PostgreSQL from the side, as an operator would."""

from __future__ import annotations

import asyncio
import time

import asyncpg


async def count_jobs(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM jobs")
        return count
    finally:
        await conn.close()


async def wait_for_a_lock_wait(db: asyncpg.Connection, timeout: float = 10) -> int:
    """The pid of another session of this database once it waits on a lock.

    `db` must be outside a transaction: pg_stat_activity is read once per transaction.
    """
    assert not db.is_in_transaction()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid: int | None = await db.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        if pid is not None:
            return pid
        await asyncio.sleep(0.01)
    raise AssertionError(f"no session waited on a lock within {timeout:g}s")
