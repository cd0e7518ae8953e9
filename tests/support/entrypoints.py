"""The real entrypoints as subprocesses, and waiting on them (and their jobs) with
deadlines, never a fixed sleep."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx

ROOT = Path(__file__).resolve().parents[2]

T = TypeVar("T")


def service_env(
    database_url: str, redis_url: str, redis_prefix: str, **extra: str
) -> dict[str, str]:
    """The environment of a test's processes: its database and Redis prefix, the test
    handlers, and fast retries and fetches so that the tests end quickly."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        REDIS_PREFIX=redis_prefix,
        HANDLER_MODULES="tests.support.handlers",
        WORKER_QUEUES="",
        BACKOFF_BASE="0.05",
        BACKOFF_MAX="1",
        BACKOFF_JITTER="0",
        WORKER_FETCH_TIMEOUT="0.2",
        SHUTDOWN_GRACE_PERIOD="10",
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
        AUTH_ENABLED="false",
    )
    env.update(extra)
    return env


class Service:
    """One entrypoint (`python -m <module> <args>`) with its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *argv],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def sigterm(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    async def exit_code(self, timeout: float) -> int:
        """Wait for the process to end; fail if it outlives `timeout`."""

        async def exited() -> int | None:
            return self.proc.poll()

        return await wait_until(exited, timeout, f"{self.name} to exit")

    def kill(self) -> None:
        """Teardown: whatever the test did, leave no process behind."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()


class Launcher:
    """Starts a test's services; the `launcher` fixture kills whatever is left at its end."""

    def __init__(self, database_url: str, redis_url: str, redis_prefix: str, log_dir: Path) -> None:
        self.database_url = database_url
        self.redis_url = redis_url
        self.redis_prefix = redis_prefix
        self.log_dir = log_dir
        self.services: list[Service] = []

    def start(self, name: str, argv: list[str], **env: str) -> Service:
        service = Service(
            name,
            argv,
            service_env(self.database_url, self.redis_url, self.redis_prefix, **env),
            self.log_dir,
        )
        self.services.append(service)
        return service


async def wait_until(
    probe: Callable[[], Awaitable[T | None]], timeout: float, what: str, interval: float = 0.01
) -> T:
    """Poll `probe` until it returns something other than None; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)


async def wait_healthy(client: httpx.AsyncClient, service: Service, timeout: float = 30) -> None:
    """Poll GET /health until it answers 200 (the lifespan is up), or the process died."""

    async def probe() -> bool | None:
        if service.proc.poll() is not None:
            raise AssertionError(f"{service.name} exited early:\n{service.log()}")
        try:
            response = await client.get("/health")
        except httpx.TransportError:
            return None
        return True if response.status_code == 200 else None

    await wait_until(probe, timeout, f"{service.name} to answer /health", interval=0.05)


TERMINAL = ("completed", "failed", "cancelled")


async def wait_for_job(
    client: httpx.AsyncClient,
    job_id: str,
    statuses: tuple[str, ...] = TERMINAL,
    *,
    timeout: float = 15,
    interval: float = 0.01,
) -> dict[str, Any]:
    """Poll GET /jobs/{id}, as a client would, until the job reaches one of `statuses`."""

    async def probe() -> dict[str, Any] | None:
        response = await client.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body if body["status"] in statuses else None

    what = f"job {job_id} to be {' or '.join(statuses)}"
    return await wait_until(probe, timeout, what, interval=interval)
