"""Circuit breakers for external calls (SMTP servers, webhook hosts), shared by every
process through Redis, so that ten workers do not each have to learn that a server is
down by burning their jobs' attempts on it.

Closed: calls go through; each connection failure counts, a success forgets them. After
`failure_threshold` failures in a row the breaker opens: for `open_seconds` no call is
let through (the caller makes its job wait without spending an attempt). Then exactly
one caller gets a probe; its success closes the breaker, its failure opens it again. A
probe that never reports (its worker died) is replaced after `probe_seconds`.

Each transition is one Lua script (atomic across processes). Times come from the
caller's clock, passed in, so a test can move time instead of sleeping. Redis trouble
never blocks a call: a breaker that cannot be read lets the call through.

    breakers = CircuitBreakers(redis, keys, failure_threshold=5, open_seconds=30)
    wait = await breakers.wait_time("smtp", "mx.example.com:587", probe_seconds=60)
    if wait:
        raise Snooze(wait, "circuit open")
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

import redis.asyncio as aioredis

from app.keys import Keys

log = logging.getLogger("hybridq.circuit")

KINDS: Final = ("smtp", "webhook")
STATES_MAX: Final = 1000

# -> {allowed (0/1), seconds to wait}. A caller that finds the open period over (or the
# previous probe's lease expired) becomes the probe: half_open with a lease of its own.
_ACQUIRE = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'closed' then return {1, '0'} end
local now = tonumber(ARGV[1])
local until_at = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
if now < until_at then return {0, tostring(until_at - now)} end
redis.call('HSET', KEYS[1], 'state', 'half_open', 'until', tostring(now + tonumber(ARGV[2])))
return {1, '0'}
"""

# A success forgets the breaker (no write at all while it is healthy).
_SUCCEED = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[1])
end
return 0
"""

# -> 1 if this failure opened the breaker. A failure while open (a call that started
# before it opened) changes nothing but the count.
_FAIL = """
local now = tonumber(ARGV[1])
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
redis.call('HSET', KEYS[1], 'last_failure_at', ARGV[1], 'last_error', ARGV[5])
redis.call('SADD', KEYS[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[6])
if state == 'half_open' or (state == 'closed' and failures >= tonumber(ARGV[2])) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'until', tostring(now + tonumber(ARGV[3])))
  return 1
end
if state == 'closed' then redis.call('HSET', KEYS[1], 'state', 'closed') end
return 0
"""


@dataclass(frozen=True, slots=True)
class CircuitState:
    """One breaker that is not known healthy (GET /health/queues, /metrics)."""

    kind: str
    target: str
    state: Literal["closed", "open", "half_open"]
    failures: int
    retry_in: float | None
    last_error: str | None


class CircuitBreakers:
    """The breakers of one kind of destination, in Redis under `keys`."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        *,
        failure_threshold: int,
        open_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.failure_threshold = failure_threshold
        self.open_seconds = open_seconds
        self.clock = clock
        # Failures of a breaker that stays closed are forgotten after this long.
        self.memory_seconds = max(600, int(open_seconds * 10))
        self._acquire = redis.register_script(_ACQUIRE)
        self._succeed = redis.register_script(_SUCCEED)
        self._fail = redis.register_script(_FAIL)

    async def wait_time(self, kind: str, target: str, *, probe_seconds: float) -> float:
        """0 if the call may go ahead now (closed, or this caller is the probe), else the
        seconds until a probe may be tried. `probe_seconds` bounds how long this caller
        may hold the probe."""
        try:
            allowed, wait = await self._acquire(
                keys=[self.keys.circuit(kind, target)], args=[self.clock(), probe_seconds]
            )
        except Exception as exc:
            log.warning("breaker %s %s unreadable (%s): call let through", kind, target, exc)
            return 0.0
        return 0.0 if int(allowed) else max(float(wait), 0.001)

    async def record_success(self, kind: str, target: str) -> None:
        """The destination answered: close (forget) its breaker."""
        try:
            await self._succeed(
                keys=[self.keys.circuit(kind, target), self.keys.circuits_index()],
                args=[f"{kind}:{target}"],
            )
        except Exception as exc:
            log.warning("could not close circuit breaker %s %s: %s", kind, target, exc)

    async def record_failure(self, kind: str, target: str, error: str) -> bool:
        """The destination could not be reached; True if the breaker opened now."""
        try:
            opened = await self._fail(
                keys=[self.keys.circuit(kind, target), self.keys.circuits_index()],
                args=[
                    self.clock(),
                    self.failure_threshold,
                    self.open_seconds,
                    f"{kind}:{target}",
                    error[:500],
                    self.memory_seconds,
                ],
            )
        except Exception as exc:
            log.warning("could not count a failure of %s %s: %s", kind, target, exc)
            return False
        if int(opened):
            log.warning(
                "circuit breaker %s %s opened for %gs: %s", kind, target, self.open_seconds, error
            )
        return bool(int(opened))


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


async def circuit_states(
    redis: aioredis.Redis, keys: Keys, now: float | None = None
) -> list[CircuitState]:
    """Every breaker that is open, half open or counting failures, from the index (no key
    scan). Healthy breakers are not stored, so they are not listed."""
    now = time.time() if now is None else now
    # The index holds only breakers that are not healthy: a small set.
    members = sorted(_text(m) or "" for m in await redis.smembers(keys.circuits_index()))
    members = members[:STATES_MAX]
    async with redis.pipeline(transaction=False) as pipe:
        for member in members:
            kind, _, target = member.partition(":")
            pipe.hgetall(keys.circuit(kind, target))
        hashes = await pipe.execute()
    states = []
    for member, raw in zip(members, hashes, strict=True):
        if not raw:
            continue  # its failures were forgotten (the hash expired)
        fields = {_text(k): _text(v) for k, v in raw.items()}
        kind, _, target = member.partition(":")
        state = fields.get("state") or "closed"
        until_at = float(fields.get("until") or 0)
        states.append(
            CircuitState(
                kind=kind,
                target=target,
                state=state,  # type: ignore[arg-type]
                failures=int(fields.get("failures") or 0),
                retry_in=round(until_at - now, 3) if state != "closed" and until_at > now else None,
                last_error=fields.get("last_error"),
            )
        )
    return states
