"""Shutdown hooks (HandlerRegistry.on_shutdown): what handlers opened for themselves is
closed when the process's services stop, as app.handlers closes its context."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

import app.registry
from app.handlers.context import HandlerContext, close_context, context, use_context
from app.registry import HandlerRegistry, Job, default_registry
from app.runtime import open_runtime
from app.settings import Settings
from tests.conftest import delete_prefix
from tests.support.factories import add_queue, create_job, job_status, run_until_settled


async def test_the_context_a_job_opened_is_closed_when_the_services_stop(
    settings: Settings,
    registry: HandlerRegistry,
    clean_db: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The context opens from the environment, as in a worker process: this test's own.
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    monkeypatch.setenv("REDIS_PREFIX", settings.redis_prefix)
    assert close_context in default_registry._on_shutdown  # app.handlers' own hook
    registry.on_shutdown(close_context)  # this test's registry, as app.handlers does
    opened: list[HandlerContext] = []

    @registry.handler("t-context")
    async def uses_the_context(job: Job) -> None:
        ctx = await context()
        await ctx.pool.fetchval("SELECT 1")
        opened.append(ctx)

    given = await HandlerContext.open(settings)  # a test's own, set by use_context
    try:
        async with open_runtime(settings, registry) as rt:
            await add_queue(rt, "t-context")
            job_id = await create_job(rt, "t-context")
            await run_until_settled(rt)
            assert await job_status(rt, job_id) == "completed"
            (ctx,) = opened
            assert not ctx.pool.is_closing()
            async with use_context(given):
                assert await context() is given
            await delete_prefix(rt.redis, settings.redis_prefix)
        # The runtime closed after its services: the job's context with it.
        with pytest.raises(asyncpg.InterfaceError, match="pool is clos"):
            await ctx.pool.fetchval("SELECT 1")
        # A context given by use_context is its owner's to close.
        assert await given.pool.fetchval("SELECT 1") == 1
    finally:
        await given.close()


async def test_a_failing_or_hanging_shutdown_hook_does_not_stop_the_others(
    registry: HandlerRegistry, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(app.registry, "SHUTDOWN_HOOK_TIMEOUT", 0.05)
    ran: list[str] = []

    @registry.on_shutdown
    async def fails() -> None:
        raise RuntimeError("could not close")

    @registry.on_shutdown
    async def hangs() -> None:
        await asyncio.Event().wait()

    @registry.on_shutdown
    async def closes() -> None:
        ran.append("closes")

    await registry.shut_down()
    assert ran == ["closes"]
    failed = [r.getMessage() for r in caplog.records if r.name == "hybridq.registry"]
    assert len(failed) == 2
    assert "fails" in failed[0] and "hangs" in failed[1]


def test_a_shutdown_hook_must_be_async(registry: HandlerRegistry) -> None:
    def close() -> None:
        return None

    with pytest.raises(TypeError, match="async function"):
        registry.on_shutdown(close)  # type: ignore[arg-type]
