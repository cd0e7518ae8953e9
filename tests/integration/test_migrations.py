"""The migrations build exactly the schema of app.db.models, and undo it cleanly."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from alembic import command
from app.db.models import Base
from app.db.setup import alembic_config
from app.jobs.transitions import JOB_STATUSES
from tests.conftest import create_database, drop_database, dsn_for


@pytest.fixture
def empty_database() -> Iterator[str]:
    name = f"hq_migr_{uuid.uuid4().hex[:10]}"
    asyncio.run(create_database(name))
    try:
        yield dsn_for(name)
    finally:
        asyncio.run(drop_database(name))


def _diffs(async_url: str) -> list[Any]:
    # compare_metadata needs a sync connection: run it through the async engine's
    # run_sync so no second driver is needed.
    async def compare() -> list[Any]:
        engine = create_async_engine(async_url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(
                    lambda sync_conn: list(
                        compare_metadata(MigrationContext.configure(sync_conn), Base.metadata)
                    )
                )
        finally:
            await engine.dispose()

    return asyncio.run(compare())


def _table_names(async_url: str) -> set[str]:
    async def names() -> set[str]:
        engine = create_async_engine(async_url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        finally:
            await engine.dispose()

    return asyncio.run(names())


def test_upgrade_matches_the_models_and_downgrade_undoes_it(empty_database: str) -> None:
    url = "postgresql+asyncpg://" + empty_database.split("://", 1)[1]
    cfg = alembic_config(url)

    command.upgrade(cfg, "head")
    assert _diffs(url) == []

    command.downgrade(cfg, "base")
    assert _table_names(url) <= {"alembic_version"}

    # And up again: the downgrade left nothing behind that blocks a second upgrade.
    command.upgrade(cfg, "head")
    assert _diffs(url) == []


async def test_the_status_check_accepts_every_status_and_nothing_else(
    database_url: str,
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            for status in JOB_STATUSES:
                await conn.execute(
                    "INSERT INTO jobs (queue_name, payload, status) "
                    "VALUES ('email-sending', '{}', $1)",
                    status,
                )
            with pytest.raises(asyncpg.CheckViolationError):
                await conn.execute(
                    "INSERT INTO jobs (queue_name, payload, status) "
                    "VALUES ('email-sending', '{}', 'deleted')"
                )
            raise _Rollback
    except _Rollback:
        pass
    finally:
        await conn.close()


class _Rollback(Exception):
    pass
