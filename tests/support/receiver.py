"""A real HTTP webhook receiver for tests: a Starlette app under uvicorn on 127.0.0.1 (or
HTTPS with the test's certificate), in the test's event loop. Every request it gets is
kept, with whether its signature verified with the Standard Webhooks reference
verifier. Routes: `/ok` (204), `/flaky` (500 then 204), `/gone` (410), `/busy` (429 with
Retry-After: 7), `/slow` (answers only when the test ends), `/moved?to=URL` (307)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.servers import free_port
from tests.support.tls import TlsFiles


@dataclass(slots=True)
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: Any  # the payload the reference verifier returned, or None if it refused


@dataclass(slots=True)
class Receiver:
    secret: str
    port: int
    scheme: str = "http"
    deliveries: list[Delivery] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    flaky_calls: int = 0

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def paths(self) -> list[str]:
        return [d.path for d in self.deliveries]


def _app(receiver: Receiver) -> Starlette:
    verifier = Webhook(receiver.secret)

    async def record(request: Request) -> Delivery:
        body = await request.body()
        try:
            verified = verifier.verify(body, dict(request.headers))
        except WebhookVerificationError:
            verified = None
        delivery = Delivery(request.url.path, dict(request.headers), body, verified)
        receiver.deliveries.append(delivery)
        return delivery

    async def ok(request: Request) -> Response:
        delivery = await record(request)
        return Response(status_code=204 if delivery.verified is not None else 401)

    async def flaky(request: Request) -> Response:
        await record(request)
        receiver.flaky_calls += 1
        return Response(status_code=500 if receiver.flaky_calls == 1 else 204)

    async def gone(request: Request) -> Response:
        await record(request)
        return Response(status_code=410)

    async def busy(request: Request) -> Response:
        await record(request)
        return Response(status_code=429, headers={"retry-after": "7"})

    async def slow(request: Request) -> Response:
        await record(request)
        await receiver.release.wait()
        return Response(status_code=204)

    async def moved(request: Request) -> Response:
        await record(request)
        return Response(status_code=307, headers={"location": request.query_params["to"]})

    routes = [("/ok", ok), ("/flaky", flaky), ("/gone", gone), ("/busy", busy)]
    routes += [("/slow", slow), ("/moved", moved)]
    return Starlette(routes=[Route(p, f, methods=["POST"]) for p, f in routes])


@contextlib.asynccontextmanager
async def run_receiver(secret: str, tls: TlsFiles | None = None) -> AsyncIterator[Receiver]:
    """Serve a receiver until the block ends; it is up (listening) when yielded."""
    receiver = Receiver(secret=secret, port=free_port(), scheme="https" if tls else "http")
    config = uvicorn.Config(
        _app(receiver),
        host="127.0.0.1",
        port=receiver.port,
        log_level="warning",
        lifespan="off",
        ssl_certfile=str(tls.cert_path) if tls else None,
        ssl_keyfile=str(tls.key_path) if tls else None,
        ssl_version=ssl.PROTOCOL_TLS_SERVER,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()  # raises why it could not start
                await asyncio.sleep(0.01)
        yield receiver
    finally:
        receiver.release.set()
        server.should_exit = True
        await task
