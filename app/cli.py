"""Shared start-up of the standalone entrypoints: settings, signals, exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisClusterException

from app.cluster import ping
from app.logs import configure_logging
from app.loops import Backoff, wait_any
from app.runtime import BackgroundServices, Runtime, open_runtime
from app.settings import Settings, SettingsError

log = logging.getLogger("hybridq")


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment; a bad value exits 2 with the setting named."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except SettingsError as exc:
        print(f"invalid settings:\n{exc}", file=sys.stderr)
        raise SystemExit(2) from exc


# Errors that mean "PostgreSQL or Redis is not there (yet)": wait and try again.
UNREACHABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    aioredis.ConnectionError,
    aioredis.TimeoutError,
    RedisClusterException,  # no node of a Redis Cluster reachable
)


async def open_when_reachable(
    settings: Settings, stopping: asyncio.Event, stack: contextlib.AsyncExitStack
) -> Runtime | None:
    """Open the runtime, waiting (with backoff) while PostgreSQL or Redis is unreachable
    instead of exiting; None if asked to stop meanwhile."""
    backoff = Backoff(0.5, 10.0)
    while not stopping.is_set():
        attempt = contextlib.AsyncExitStack()
        try:
            runtime = await attempt.enter_async_context(open_runtime(settings))
            await ping(runtime.redis)
        except UNREACHABLE as exc:
            await attempt.aclose()
            delay = backoff.next()
            log.warning("PostgreSQL or Redis unreachable (%r); retrying in %.1fs", exc, delay)
            await wait_any(stopping, timeout=delay)
            continue
        stack.push_async_exit(attempt)
        return runtime
    return None


async def serve(settings: Settings, build: Callable[[Runtime], BackgroundServices]) -> None:
    """Run the services until SIGTERM/SIGINT (or until they end), then stop gracefully.
    A service that crashes ends the process with exit 1 (app.supervise)."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    async with contextlib.AsyncExitStack() as stack:
        runtime = await open_when_reachable(settings, stopping, stack)
        if runtime is None:
            return
        services = build(runtime)
        services.start()
        ended = asyncio.ensure_future(services.wait_first())
        stop_wait = asyncio.ensure_future(stopping.wait())
        await asyncio.wait({ended, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        await services.shutdown(settings.shutdown_grace_period)
        await services.wait()


def run(main: Callable[[], Coroutine[Any, Any, None]], settings: Settings) -> None:
    configure_logging(settings.log_level, settings.log_format)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is optional on some platforms
        pass
    try:
        asyncio.run(main())
    except RuntimeError as exc:  # e.g. a handler module that cannot be imported
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
