"""The HTTP server's own limits (app/server.py), against the real `python -m app` over
raw sockets: what a client may send before its request reaches the app, and how long
it may take."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from app.api.auth import digest
from tests.support.entrypoints import Launcher, Service, wait_healthy
from tests.support.servers import free_port

TIMEOUT = 1.0  # HEADER_TIMEOUT, KEEP_ALIVE_TIMEOUT and REQUEST_BODY_TIMEOUT of the API
BOUND = 10.0  # seconds any answer may take here


@dataclass(slots=True)
class Api:
    port: int
    service: Service
    client: httpx.AsyncClient

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.service.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")


KEY = "limits-producer-key"


@pytest.fixture
async def api(launcher: Launcher) -> AsyncIterator[Api]:
    port = free_port()
    service = launcher.start(
        "api",
        ["app", "--port", str(port)],
        EMBED_MIGRATOR="false",
        EMBED_WORKER="false",
        HEADER_TIMEOUT=str(TIMEOUT),
        KEEP_ALIVE_TIMEOUT=str(int(TIMEOUT)),
        REQUEST_BODY_TIMEOUT=str(TIMEOUT),
        AUTH_ENABLED="true",
        API_KEYS=f"limits:producer:sha256:{digest(KEY).hex()}",
    )
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=BOUND) as client:
        await wait_healthy(client, service)
        yield Api(port, service, client)
        assert (await client.get("/health")).status_code == 200  # still serving


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (bounded)."""
    return await asyncio.wait_for(reader.read(), BOUND)


async def test_a_head_over_the_size_limit_is_431_and_closed(api: Api) -> None:
    reader, writer = await api.connect()
    writer.write(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20_000)
    answer = await until_closed(reader)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    assert b"16384 bytes" in answer
    writer.close()


async def test_too_many_header_fields_is_431(api: Api) -> None:
    reader, writer = await api.connect()
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(101))
    writer.write(b"GET /health HTTP/1.1\r\nHost: t\r\n" + fields + b"\r\n")
    answer = await until_closed(reader)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    assert b"more than 100 header fields" in answer
    writer.close()


async def test_a_50_mb_header_is_cut_off_and_the_api_does_not_grow(api: Api) -> None:
    before = api.rss_mb()
    _reader, writer = await api.connect()
    writer.write(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: ")
    sent = 0
    chunk = b"a" * 65536
    with contextlib.suppress(ConnectionError):
        while sent < 50 * 1024 * 1024:
            writer.write(chunk)
            await asyncio.wait_for(writer.drain(), BOUND)
            sent += len(chunk)
    assert sent < 50 * 1024 * 1024, "the server read the whole 50 MB header"
    writer.close()
    assert api.rss_mb() - before < 10, (before, api.rss_mb())


async def test_a_head_sent_too_slowly_is_408_and_a_silent_connection_is_closed(
    api: Api,
) -> None:
    reader, writer = await api.connect()
    writer.write(b"GET /health HTTP/1.1\r\nHost: t\r\n")  # and never the blank line
    answer = await until_closed(reader)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    writer.close()

    reader, writer = await api.connect()
    assert await until_closed(reader) == b""
    writer.close()


async def test_an_idle_keep_alive_connection_is_closed(api: Api) -> None:
    reader, writer = await api.connect()
    writer.write(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
    answer = await until_closed(reader)  # the answer, then the close after TIMEOUT
    assert answer.startswith(b"HTTP/1.1 200 ")
    writer.close()


async def test_a_body_sent_too_slowly_is_408(api: Api) -> None:
    reader, writer = await api.connect()
    writer.write(
        b"POST /jobs HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + KEY.encode() + b"\r\n"
        b'Content-Length: 200\r\n\r\n{"queue_name": '
    )
    answer = await until_closed(reader)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    assert b'"type":"timeout"' in answer
    writer.close()


async def test_a_large_body_sent_with_its_head_in_one_write_is_served(api: Api) -> None:
    # The head limit counts only the head: a body beyond 16 KiB in the same packets
    # goes on to the app.
    body = orjson.dumps({"queue_name": "email-sending", "payload": {"blob": "x" * 200_000}})
    reader, writer = await api.connect()
    writer.write(
        b"POST /jobs HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + KEY.encode() + b"\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )
    answer = await until_closed(reader)
    assert answer.startswith(b"HTTP/1.1 201 "), answer[:300]
    writer.close()


async def test_without_a_key_the_401_comes_before_the_body(api: Api) -> None:
    # The head promises 8 MB of malformed JSON and only the head is sent: the answer
    # (401, not 422 or 413) comes from the headers, and the connection is closed.
    reader, writer = await api.connect()
    writer.write(
        b"POST /jobs/batch HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: 8388608\r\n\r\n{not json"
    )
    answer = await until_closed(reader)
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:100]
    assert b"missing API key" in answer
    writer.close()
