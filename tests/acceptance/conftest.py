"""Acceptance tests start the real entrypoints as subprocesses, on this run's database
and this test's Redis prefix, with the handlers of tests/support/handlers.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.conftest import REDIS_URL, delete_prefix
from tests.support.entrypoints import Launcher


@pytest.fixture
def launcher(
    database_url: str, redis_prefix: str, clean_db: None, tmp_path: Path
) -> Iterator[Launcher]:
    launched = Launcher(database_url, REDIS_URL, redis_prefix, tmp_path)
    try:
        yield launched
    finally:
        for service in launched.services:
            service.kill()
            # Shown by pytest when the test failed: what each process said.
            print(f"----- {service.name} (exit {service.proc.returncode}) -----")
            print(service.log())


@pytest.fixture(autouse=True)
async def _forget_redis_keys(redis_prefix: str) -> AsyncIterator[None]:
    yield
    redis = aioredis.Redis.from_url(REDIS_URL)
    try:
        await delete_prefix(redis, redis_prefix)
    finally:
        await redis.aclose()
