"""Property-based fuzzing of the API against its own OpenAPI document (schemathesis):
for every operation, a bounded number of generated requests (derandomized, so CI sees
the same ones) sent with an admin key to the real app on the test database. Each answer
must be no 5xx, a documented status, the documented content type, and a body matching
the declared schema."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis import checks

from app.api.auth import digest
from app.main import create_app
from app.registry import HandlerRegistry
from app.settings import Settings
from tests.support.api import api_only, serve_app

T = TypeVar("T")
ADMIN = "fuzz-admin-key"
EXAMPLES_PER_OPERATION = 15
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


class LoopThread:
    """An event loop in a thread, so that hypothesis (synchronous) can drive the app and
    its lifespan, which live in that loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def served_client(
    settings: Settings, clean_db: None
) -> Iterator[tuple[LoopThread, httpx.AsyncClient]]:
    keyed = api_only(
        settings, auth_enabled=True, api_keys=[f"fuzz:admin:sha256:{digest(ADMIN).hex()}"]
    )
    loop = LoopThread()
    stack = contextlib.AsyncExitStack()

    async def enter() -> httpx.AsyncClient:
        served = await stack.enter_async_context(serve_app(keyed, HandlerRegistry()))
        return served.client

    client = loop.run(enter())
    try:
        yield loop, client
    finally:
        loop.run(stack.aclose())
        loop.stop()


def test_every_operation_answers_as_documented(
    served_client: tuple[LoopThread, httpx.AsyncClient], settings: Settings
) -> None:
    loop, client = served_client
    document = create_app(settings.replace(auth_enabled=False)).openapi()
    schema = schemathesis.openapi.from_dict(document)
    # Every operation of our own document loads: an Err here would raise, as it should.
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) == 24
    sent = 0

    async def send(kwargs: dict[str, Any]) -> httpx.Response:
        return await client.request(**kwargs)

    for operation in operations:

        @hypothesis_settings(
            max_examples=EXAMPLES_PER_OPERATION,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            nonlocal sent
            kwargs = case.as_transport_kwargs(
                base_url="http://hybridq", headers={"Authorization": f"Bearer {ADMIN}"}
            )
            request = {
                k: v
                for k, v in kwargs.items()
                if k in ("method", "url", "headers", "params", "json", "content", "data")
            }
            response = loop.run(send(request))
            sent += 1
            case.validate_response(response, checks=CHECKS)

        check()
    print(f"\nfuzzed {len(operations)} operations with {sent} requests")
    assert sent >= len(operations) * 5
