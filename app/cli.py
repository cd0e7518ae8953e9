"""Shared start-up of the standalone entrypoints: settings, signals, exit codes."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from pydantic import ValidationError

from app.logs import configure_logging
from app.runtime import BackgroundServices, Runtime, open_runtime
from app.settings import Settings


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment; a bad value exits 2 with the setting named."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        print(f"invalid settings:\n{exc}", file=sys.stderr)
        raise SystemExit(2) from exc


async def serve(settings: Settings, build: Callable[[Runtime], BackgroundServices]) -> None:
    """Run the services until SIGTERM/SIGINT (or until they end), then stop gracefully."""
    async with open_runtime(settings) as runtime:
        services = build(runtime)
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
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
