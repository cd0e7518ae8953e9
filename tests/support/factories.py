"""Helpers to create jobs and drive the migrator and workers to a condition."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import asyncpg

from app.db.rows import NewJob
from app.runtime import Runtime


async def add_queue(
    rt: Runtime, name: str, *, active: bool = True, default_priority: int = 100
) -> None:
    await rt.pool.execute(
        "INSERT INTO job_queues (name, is_active, default_priority) VALUES ($1, $2, $3) "
        "ON CONFLICT (name) DO UPDATE SET is_active = $2, default_priority = $3",
        name,
        active,
        default_priority,
    )


async def create_job(
    rt: Runtime,
    queue: str,
    payload: dict[str, Any] | None = None,
    *,
    priority: int | None = None,
    run_at: datetime | None = None,
    max_attempts: int = 3,
) -> uuid.UUID:
    created = await rt.inserts.create_job(
        NewJob(
            queue_name=queue,
            payload=payload if payload is not None else {},
            priority=priority,
            run_at=run_at,
            max_attempts=max_attempts,
        )
    )
    assert created is not None, f"queue {queue} does not exist"
    return created.id


async def job_row(rt: Runtime, job_id: uuid.UUID) -> asyncpg.Record:
    row = await rt.pool.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
    assert row is not None, f"job {job_id} does not exist"
    return row


async def job_status(rt: Runtime, job_id: uuid.UUID) -> str:
    status: str = await rt.pool.fetchval("SELECT status FROM jobs WHERE id = $1", job_id)
    return status


async def wait_for(
    condition: Callable[[], Awaitable[bool]], *, timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll an async condition until it holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


async def run_until_settled(rt: Runtime, **worker_args: Any) -> None:
    """Migrate and run burst workers until no job is queued-and-due, migrated or running.

    Retries come back as scheduled jobs with a later run_at, so wait for each to be due.
    """
    for _ in range(200):
        await rt.migrator().move_due_jobs()
        await rt.worker(burst=True, **worker_args).run()
        pending = await rt.pool.fetchval(
            "SELECT count(*) FROM jobs "
            "WHERE status IN ('scheduled', 'queued', 'migrated_to_redis', 'running')"
        )
        if not pending:
            return
        wait = await rt.pool.fetchval(
            "SELECT GREATEST(0, EXTRACT(EPOCH FROM min(run_at) - now()))::float8 FROM jobs "
            "WHERE status IN ('scheduled', 'queued')"
        )
        if wait:
            await asyncio.sleep(min(wait, 2.0))
    raise AssertionError("jobs did not settle")


async def make_failed(
    rt: Runtime,
    queue: str,
    *,
    failed_at: datetime | None = None,
    error: str = "boom",
    attempts: int = 3,
) -> uuid.UUID:
    """A dead letter made directly in PostgreSQL (for listing and filtering tests; the
    replay tests make theirs by running a failing handler)."""
    job_id = await create_job(rt, queue, max_attempts=attempts)
    await rt.pool.execute(
        "UPDATE jobs SET status = 'failed', attempt_count = max_attempts, "
        "failed_at = COALESCE($2, now()), last_error_message = $3, updated_at = now() "
        "WHERE id = $1",
        job_id,
        failed_at,
        error,
    )
    return job_id
