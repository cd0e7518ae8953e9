"""Test isolation: each test run gets its own PostgreSQL database (migrated with
Alembic) and each test its own Redis key prefix, so runs and tests cannot disturb
each other. PostgreSQL and Redis are the real servers of the machine, never mocks.

TEST_DATABASE_ADMIN_URL (a DSN to a database we may CREATE DATABASE from) and
TEST_REDIS_URL override where they are.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from app.db.setup import upgrade
from app.main import create_app, serving
from app.registry import HandlerRegistry
from app.runtime import Runtime, open_runtime
from app.settings import Settings

ADMIN_DSN = os.environ.get(
    "TEST_DATABASE_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN_ID = uuid.uuid4().hex[:10]


def dsn_for(database: str) -> str:
    return urlunsplit(urlsplit(ADMIN_DSN)._replace(path=f"/{database}"))


async def create_database(name: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_database(name: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh database for this test run, upgraded to the head migration."""
    name = f"hq_test_{RUN_ID}"
    asyncio.run(create_database(name))
    dsn = dsn_for(name)
    try:
        upgrade(Settings(database_url=dsn).sqlalchemy_url)
        yield dsn
    finally:
        asyncio.run(drop_database(name))


@pytest.fixture
def redis_prefix(request: pytest.FixtureRequest) -> str:
    return f"hqtest:{RUN_ID}:{uuid.uuid4().hex[:8]}:"


@pytest.fixture(scope="session", autouse=True)
def run_keys_removed() -> Iterator[None]:
    """At the end of the run, every key under its prefixes (`hqtest:<run>:`): each test
    deletes its own, but a process or a background write may still land after that
    (metrics, a job's hash), and each run left some 80 keys behind."""
    yield
    asyncio.run(_delete_run_keys())


async def _delete_run_keys() -> None:
    redis = aioredis.Redis.from_url(REDIS_URL)
    try:
        await delete_prefix(redis, f"hqtest:{RUN_ID}:")
    finally:
        await redis.aclose()


@pytest.fixture
def settings(database_url: str, redis_prefix: str) -> Settings:
    """Settings for one test: fast retries and timeouts so tests end quickly."""
    return Settings(
        database_url=database_url,
        redis_url=REDIS_URL,
        redis_prefix=redis_prefix,
        handler_modules=[],
        backoff_base=0.05,
        backoff_max=1.0,
        backoff_jitter=0.0,
        worker_fetch_timeout=0.2,
        shutdown_grace_period=5.0,
        migrator_poll_interval=5.0,
        auth_enabled=False,
        # Most tests look at a job before the migrator moves it: the direct path (a due
        # job pushed by its producer) has its own tests (test_direct_push.py), and the
        # acceptance tests run the service with its defaults, the direct path included.
        direct_push=False,
    )


@pytest.fixture
async def clean_db(database_url: str) -> AsyncIterator[None]:
    """Empty the job tables before a test (the queues table keeps the seed rows)."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "TRUNCATE jobs, job_logs, analytics_jobs, email_events, suppressions, "
            "email_daily_stats, email_campaign_stats, billing_usage, schedules, schedule_ticks "
            "CASCADE"
        )
        await conn.execute(
            "DELETE FROM job_queues WHERE name LIKE 't-%'; UPDATE job_queues SET is_active = true"
        )
    finally:
        await conn.close()
    yield


@pytest.fixture
def registry() -> HandlerRegistry:
    """A registry of this test's own handlers (not the process-wide default)."""
    return HandlerRegistry()


@pytest.fixture
async def runtime(
    settings: Settings, registry: HandlerRegistry, clean_db: None
) -> AsyncIterator[Runtime]:
    async with open_runtime(settings, registry) as rt:
        try:
            yield rt
        finally:
            await delete_prefix(rt.redis, settings.redis_prefix)


async def delete_prefix(redis: aioredis.Redis, prefix: str) -> None:
    keys = [k async for k in redis.scan_iter(match=f"{prefix}*", count=1000)]
    if keys:
        await redis.delete(*keys)


@pytest.fixture
async def client(runtime: Runtime, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The HTTP API on this test's runtime, without its lifespan: no migrator or worker
    runs unless the test starts one."""
    app = create_app(settings, runtime.registry)
    transport = httpx.ASGITransport(app=app)
    async with (
        serving(app, runtime),
        httpx.AsyncClient(transport=transport, base_url="http://hybridq.test") as c,
    ):
        yield c
