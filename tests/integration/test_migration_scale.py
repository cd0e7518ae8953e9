"""Jobs made before migration 0005 (UUIDv4 ids, no counters) keep working after it:
they are counted, listed, moved, claimed and completed like new ones."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import asyncpg
import pytest

from alembic import command
from app.db.counts import count_jobs
from app.db.hot import CLAIM_JOBS, COMPLETE_JOBS, MOVE_DUE_JOBS
from app.db.listings import list_jobs_sql
from app.db.setup import alembic_config
from tests.conftest import create_database, drop_database, dsn_for

QUEUE = "email-sending"  # a seed queue: the first migration creates it


@pytest.fixture
def database() -> Iterator[str]:
    name = f"hq_migr5_{uuid.uuid4().hex[:10]}"
    asyncio.run(create_database(name))
    try:
        yield dsn_for(name)
    finally:
        asyncio.run(drop_database(name))


def test_jobs_made_before_the_migration_keep_working(database: str) -> None:
    cfg = alembic_config("postgresql+asyncpg://" + database.split("://", 1)[1])
    command.upgrade(cfg, "0004")
    old = {status: uuid.uuid4() for status in ("queued", "completed", "failed")}

    async def before() -> None:
        conn = await asyncpg.connect(database)
        try:
            for status, job_id in old.items():
                await conn.execute(
                    "INSERT INTO jobs (id, queue_name, payload, status) VALUES ($1, $2, '{}', $3)",
                    job_id,
                    QUEUE,
                    status,
                )
        finally:
            await conn.close()

    asyncio.run(before())
    command.upgrade(cfg, "head")

    async def after() -> None:
        conn = await asyncpg.connect(database)
        try:
            counts = await count_jobs(conn, timeout=5.0)
            assert counts.by_status == {"queued": 1, "completed": 1, "failed": 1}
            # A new job: its id is a UUIDv7 from the column default.
            new = await conn.fetchval(
                "INSERT INTO jobs (queue_name, payload) VALUES ($1, '{}') RETURNING id", QUEUE
            )
            assert new.version == 7 and old["queued"].version == 4
            text, args = list_jobs_sql(
                queue_name=QUEUE,
                status=None,
                created_from=None,
                created_to=None,
                after_id=None,
                limit=10,
            )
            listed = {r["id"] for r in await conn.fetch(text, *args)}
            assert listed == {*old.values(), new}

            async with conn.transaction():
                moved = {r["id"] for r in await conn.fetch(MOVE_DUE_JOBS, [QUEUE], 10, "10000")}
            assert moved == {old["queued"], new}
            claimed = await conn.fetch(CLAIM_JOBS, list(moved), "w-1", 30.0, "5000")
            assert len(claimed) == 2
            now = [datetime.now(UTC)] * 2
            tokens = {r["id"]: r["lease_token"] for r in claimed}
            ids = list(moved)
            done = await conn.fetch(
                COMPLETE_JOBS, ids, [1, 1], now, now, "w-1", [tokens[i] for i in ids]
            )
            assert len(done) == 2
            counts = await count_jobs(conn, timeout=5.0)
            assert counts.by_status == {"completed": 3, "failed": 1}
        finally:
            await conn.close()

    asyncio.run(after())
