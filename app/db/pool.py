"""The asyncpg pool every process opens once (in the lifespan or the entrypoint)."""

from __future__ import annotations

from typing import Any, TypeAlias

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

# A plain connection or one borrowed from a pool (a string: the proxy is generic only
# in the type stubs).
Connection: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename,
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to undo when a connection goes back to the pool. asyncpg's default reset
    sends `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` on every
    release: a round trip per acquire, a third of a single-job enqueue in the profile.
    Our statements leave no session state behind: settings are transaction-local
    (`set_config(..., true)`), LISTEN runs on dedicated connections, and there are no
    advisory locks, cursors or prepared statements of our own. An open transaction is
    still rolled back by asyncpg before this is called."""


async def create_pool(
    dsn: str, *, min_size: int = 2, max_size: int = 10, command_timeout: float = 10.0
) -> asyncpg.Pool:
    """A connection pool with JSON codecs; made once per process (in the lifespan)."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=command_timeout,
        timeout=command_timeout,
        init=_init_connection,
        reset=_keep_session,
    )
    assert pool is not None
    return pool
