"""The producer paths the benchmark measures, each call committed before it returns:

- `JobClient` (app.producer): the client with a pool of its own; one job is one
  statement and one round trip. The target paths (`one`, `many`).
- `enqueue` / `enqueue_many` inside a caller's SQLAlchemy transaction (BEGIN, the
  insert, COMMIT), measured for reference (`tx_one`, `tx_many`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.db.rows import NewJob
from app.producer import JobClient, enqueue, enqueue_many
from app.settings import Settings

EnqueueOne = Callable[[NewJob], Awaitable[object]]
EnqueueMany = Callable[[Sequence[NewJob]], Awaitable[object]]


@dataclass(slots=True)
class Producer:
    one: EnqueueOne
    one_label: str
    many: EnqueueMany
    many_label: str
    tx_one: EnqueueOne
    tx_one_label: str
    tx_many: EnqueueMany
    tx_many_label: str
    client: JobClient
    engine: AsyncEngine

    async def close(self) -> None:
        await self.client.close()
        await self.engine.dispose()


def _item(job: NewJob) -> Mapping[str, Any]:
    return {
        "queue_name": job.queue_name,
        "payload": job.payload,
        "max_attempts": job.max_attempts,
        **({"priority": job.priority} if job.priority is not None else {}),
        **({"run_at": job.run_at} if job.run_at is not None else {}),
    }


async def open_producer(dsn: str, redis_url: str | None = None, prefix: str = "") -> Producer:
    """With `redis_url`, JobClient takes the direct path (DIRECT_PUSH), as the API does."""
    client = await JobClient.connect(
        dsn, min_size=1, max_size=4, redis_url=redis_url, redis_prefix=prefix
    )
    engine = create_async_engine(Settings(database_url=dsn).sqlalchemy_url, pool_size=4)

    async def one(job: NewJob) -> object:
        return await client.enqueue(
            job.queue_name,
            job.payload,
            priority=job.priority,
            run_at=job.run_at,
            max_attempts=job.max_attempts,
        )

    async def many(jobs: Sequence[NewJob]) -> object:
        return await client.enqueue_many([_item(j) for j in jobs])

    async def tx_one(job: NewJob) -> object:
        async with engine.begin() as conn:
            return await enqueue(
                conn,
                job.queue_name,
                job.payload,
                priority=job.priority,
                run_at=job.run_at,
                max_attempts=job.max_attempts,
            )

    async def tx_many(jobs: Sequence[NewJob]) -> object:
        async with engine.begin() as conn:
            return await enqueue_many(conn, [_item(j) for j in jobs])

    return Producer(
        one=one,
        one_label="app.producer.JobClient.enqueue, committed per job (one statement)"
        + (
            ", pushed to Redis after its commit (direct path) when its producer was idle,"
            " else moved by the migrator (app.direct.BUSY_GAP)"
            if redis_url
            else ""
        ),
        many=many,
        many_label="app.producer.JobClient.enqueue_many, one transaction per batch",
        tx_one=tx_one,
        tx_one_label="app.producer.enqueue in a SQLAlchemy transaction (BEGIN, insert, COMMIT)",
        tx_many=tx_many,
        tx_many_label="app.producer.enqueue_many in a SQLAlchemy transaction",
        client=client,
        engine=engine,
    )
