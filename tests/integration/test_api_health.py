"""GET /health (liveness) and GET /health/ready (PostgreSQL and Redis), with each of
them really unreachable: a Redis port nobody listens on, a Redis that accepts but never
answers, and a database dropped under the running app."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from app.api.health.schemas import ReadyOut
from app.settings import Settings
from tests.conftest import RUN_ID, create_database, drop_database, dsn_for
from tests.support.api import api_only, serve_app


@contextlib.contextmanager
def bound_socket() -> Iterator[socket.socket]:
    """A local port that refuses connections: bound (so nobody else takes it), not
    listening."""
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", 0))
        yield sock
    finally:
        sock.close()


@contextlib.asynccontextmanager
async def silent_server(sock: socket.socket) -> AsyncIterator[None]:
    """Make `sock` accept connections and never answer them (a hung server)."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, sock=sock)
    try:
        yield
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.fixture
async def scratch_database_url() -> AsyncIterator[str]:
    """An empty database of its own, so that the test may drop it under the app."""
    name = f"hq_test_{RUN_ID}_{uuid.uuid4().hex[:6]}"
    await create_database(name)
    try:
        yield dsn_for(name)
    finally:
        await drop_database(name)


def unready_checks(response: httpx.Response) -> dict[str, str]:
    """The checks of a readiness answer that must be a 503 "unavailable"."""
    assert response.status_code == 503
    body = ReadyOut.model_validate(response.json())
    assert body.status == "unavailable"
    return body.checks


async def test_liveness_and_readiness_answer_ok(settings: Settings) -> None:
    async with serve_app(api_only(settings)) as served:
        live = await served.client.get("/health")
        ready = await served.client.get("/health/ready")

    assert live.status_code == 200
    assert live.json() == {"status": "ok"}
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"postgres": "ok", "redis": "ok"}}


async def test_ready_is_503_naming_redis_when_nothing_listens_on_its_port(
    settings: Settings,
) -> None:
    with bound_socket() as sock:
        port = sock.getsockname()[1]
        bad = api_only(settings, redis_url=f"redis://127.0.0.1:{port}/0")
        async with serve_app(bad) as served:
            ready = await served.client.get("/health/ready")
            live = await served.client.get("/health")

    checks = unready_checks(ready)
    assert checks["postgres"] == "ok"
    assert checks["redis"].startswith("error: ")
    assert f"127.0.0.1:{port}" in checks["redis"]  # which server could not be reached
    assert live.status_code == 200  # liveness does no I/O


async def test_ready_is_503_with_a_reason_when_redis_hangs(settings: Settings) -> None:
    with bound_socket() as sock:
        bad = api_only(settings, redis_url=f"redis://127.0.0.1:{sock.getsockname()[1]}/0")
        # Redis hangs once the app is up (so start-up does not wait on it first).
        async with serve_app(bad) as served, silent_server(sock):
            started = time.monotonic()
            ready = await served.client.get("/health/ready")
            elapsed = time.monotonic() - started

    checks = unready_checks(ready)
    assert checks["postgres"] == "ok"
    # A timeout's message is empty: the check must still say what went wrong.
    assert checks["redis"] == "error: TimeoutError"
    assert elapsed < 5  # bounded by the readiness timeout, not Redis's socket timeout


async def test_ready_is_503_naming_postgres_once_its_database_is_gone(
    settings: Settings, scratch_database_url: str
) -> None:
    on_scratch = api_only(settings, database_url=scratch_database_url)
    async with serve_app(on_scratch) as served:
        assert (await served.client.get("/health/ready")).status_code == 200
        # Terminates the app's pooled connections; reconnecting finds no database.
        await drop_database(scratch_database_url.rsplit("/", 1)[1])

        ready = await served.client.get("/health/ready")
        live = await served.client.get("/health")

    checks = unready_checks(ready)
    assert checks["redis"] == "ok"
    assert checks["postgres"].startswith("error: ")
    assert "does not exist" in checks["postgres"]
    assert live.status_code == 200
