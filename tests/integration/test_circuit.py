"""Circuit breakers shared through Redis: what one process learns, every process knows;
an open breaker makes callers wait, one probe at a time, and shows in /metrics and
GET /health/queues. Time is a test clock: no sleeping through the open period."""

from __future__ import annotations

import httpx
import redis.asyncio as aioredis

from app.circuit import CircuitBreakers, circuit_states
from app.runtime import Runtime
from tests.conftest import REDIS_URL

TARGET = "mx.example.com:587"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def breakers(rt: Runtime, clock: Clock, redis: aioredis.Redis | None = None) -> CircuitBreakers:
    return CircuitBreakers(
        redis or rt.redis, rt.keys, failure_threshold=3, open_seconds=30, clock=clock
    )


async def test_failures_in_a_row_open_the_breaker_for_every_process(runtime: Runtime) -> None:
    clock = Clock()
    here = breakers(runtime, clock)
    other_redis = aioredis.Redis.from_url(REDIS_URL)  # another process's own connection
    try:
        there = breakers(runtime, clock, other_redis)
        assert await here.wait_time("smtp", TARGET, probe_seconds=10) == 0
        assert not await here.record_failure("smtp", TARGET, "refused 1")
        assert not await there.record_failure("smtp", TARGET, "refused 2")
        assert await there.wait_time("smtp", TARGET, probe_seconds=10) == 0  # still closed
        assert await here.record_failure("smtp", TARGET, "refused 3")  # the third opens it

        clock.now += 10
        assert await there.wait_time("smtp", TARGET, probe_seconds=10) == 20
        assert await here.wait_time("smtp", TARGET, probe_seconds=10) == 20
        # Another destination is not affected.
        assert await there.wait_time("smtp", "other.example.com:25", probe_seconds=10) == 0
    finally:
        await other_redis.aclose()


async def test_one_probe_after_the_open_period_closes_or_reopens_it(runtime: Runtime) -> None:
    clock = Clock()
    b = breakers(runtime, clock)
    for n in range(3):
        await b.record_failure("webhook", "hooks.example.com", f"timeout {n}")

    clock.now += 30
    assert await b.wait_time("webhook", "hooks.example.com", probe_seconds=10) == 0  # probe
    # While the probe runs, nobody else goes.
    assert await b.wait_time("webhook", "hooks.example.com", probe_seconds=10) == 10
    assert await b.record_failure("webhook", "hooks.example.com", "timeout again")  # reopens
    assert await b.wait_time("webhook", "hooks.example.com", probe_seconds=10) == 30

    clock.now += 30
    assert await b.wait_time("webhook", "hooks.example.com", probe_seconds=10) == 0
    await b.record_success("webhook", "hooks.example.com")
    assert await b.wait_time("webhook", "hooks.example.com", probe_seconds=10) == 0
    assert await b.wait_time("webhook", "hooks.example.com", probe_seconds=10) == 0
    assert await circuit_states(runtime.redis, runtime.keys) == []


async def test_a_probe_that_never_reports_is_replaced(runtime: Runtime) -> None:
    clock = Clock()
    b = breakers(runtime, clock)
    for _ in range(3):
        await b.record_failure("smtp", TARGET, "refused")
    clock.now += 30
    assert await b.wait_time("smtp", TARGET, probe_seconds=10) == 0  # its worker dies
    clock.now += 10
    assert await b.wait_time("smtp", TARGET, probe_seconds=10) == 0  # the next caller probes


async def test_breakers_show_in_metrics_and_queue_health(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    b = CircuitBreakers(runtime.redis, runtime.keys, failure_threshold=2, open_seconds=60)
    await b.record_failure("smtp", TARGET, "ConnectionRefusedError: refused")
    await b.record_failure("smtp", TARGET, "ConnectionRefusedError: refused")
    await b.record_failure("webhook", "hooks.example.com", "ConnectTimeout")

    health = (await client.get("/health/queues")).json()
    by_target = {c["target"]: c for c in health["circuit_breakers"]}
    assert by_target[TARGET]["state"] == "open"
    assert by_target[TARGET]["failures"] == 2
    assert 0 < by_target[TARGET]["retry_in"] <= 60
    assert by_target[TARGET]["last_error"] == "ConnectionRefusedError: refused"
    assert by_target["hooks.example.com"]["state"] == "closed"

    text = (await client.get("/metrics")).text
    assert f'hybridq_circuit_breaker_open{{kind="smtp",target="{TARGET}"}} 1.0' in text
    assert 'hybridq_circuit_breaker_open{kind="webhook",target="hooks.example.com"} 0.0' in text
    assert 'hybridq_circuit_breaker_failures{kind="webhook",target="hooks.example.com"} 1.0' in text

    await b.record_success("smtp", TARGET)
    health = (await client.get("/health/queues")).json()
    assert [c["target"] for c in health["circuit_breakers"]] == ["hooks.example.com"]
