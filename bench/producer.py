"""The producer paths the benchmark measures: the Python producer library
(`app.producer.enqueue` / `enqueue_many`) on a SQLAlchemy AsyncConnection, each call in
a transaction of its own, committed, as a caller would use it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.db.store import NewJob
from app.producer import enqueue, enqueue_many
from app.settings import Settings

EnqueueOne = Callable[[NewJob], Awaitable[object]]
EnqueueMany = Callable[[Sequence[NewJob]], Awaitable[object]]


@dataclass(slots=True)
class Producer:
    one: EnqueueOne
    one_label: str
    many: EnqueueMany
    many_label: str
    engine: AsyncEngine

    async def close(self) -> None:
        await self.engine.dispose()


def find_producer(dsn: str) -> Producer:
    engine = create_async_engine(Settings(database_url=dsn).sqlalchemy_url, pool_size=4)

    async def one(job: NewJob) -> object:
        async with engine.begin() as conn:
            return await enqueue(
                conn,
                job.queue_name,
                job.payload,
                priority=job.priority,
                run_at=job.run_at,
                max_attempts=job.max_attempts,
            )

    async def many(jobs: Sequence[NewJob]) -> object:
        async with engine.begin() as conn:
            return await enqueue_many(
                conn,
                [
                    {
                        "queue_name": j.queue_name,
                        "payload": j.payload,
                        "max_attempts": j.max_attempts,
                        **({"priority": j.priority} if j.priority is not None else {}),
                        **({"run_at": j.run_at} if j.run_at is not None else {}),
                    }
                    for j in jobs
                ],
            )

    return Producer(
        one=one,
        one_label="app.producer.enqueue, one transaction (commit) per job",
        many=many,
        many_label="app.producer.enqueue_many, one transaction per batch",
        engine=engine,
    )
