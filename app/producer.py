"""The producer library: enqueue jobs from Python inside your own transaction.

    from app.producer import enqueue

    async with AsyncSession(engine) as session, session.begin():
        session.add(order)
        job_id = await enqueue(session, "email-sending", {"order_id": order.id})
    # The job exists only if this transaction commits; the migrator is woken at commit.

`enqueue` and `enqueue_many` take an open SQLAlchemy AsyncSession or AsyncConnection
(on the asyncpg driver) and run the same statements and validation as POST /jobs and
POST /jobs/batch, inside a savepoint of the caller's transaction: a rejected call
changes nothing and leaves the caller's transaction usable.

`JobClient` is for code with no transaction to join: it keeps a pool of its own and
commits each call before returning; one job is one statement and one round trip.
"""

from __future__ import annotations

import contextlib
import functools
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from app.crypto import PayloadCipher
from app.db.inserts import PIPELINE_CHUNK, InsertStore, insert_jobs
from app.db.pool import create_pool
from app.jobs.errors import InputErrors
from app.jobs.model import InsertResult, JobToInsert
from app.jobs.request import BatchJob
from app.jobs.validation import (
    collector_paused,
    prepare_in_chunks,
    prepare_jobs,
    raise_for_refused,
)
from app.registry import default_registry
from app.settings import Settings

if TYPE_CHECKING:  # SQLAlchemy is loaded only by callers that pass its objects
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

    from app.direct import DirectPush

# The service's defaults (MAX_PAYLOAD_BYTES, IDEMPOTENCY_KEY_TTL); pass your own to match
# a deployment that changed them.
MAX_PAYLOAD_BYTES = 256 * 1024
IDEMPOTENCY_KEY_TTL = 86_400

# Raised for a rejected job: `.errors` lists each problem as {"loc", "msg", "type"} and
# `.status_code` is the HTTP status the API would answer (422, 413 or 409).
JobRejected = InputErrors


@functools.cache
def _environment_cipher() -> PayloadCipher:
    settings = Settings()
    return PayloadCipher(settings.encryption_keys, settings.encrypted_fields)


async def enqueue(
    conn_or_session: AsyncSession | AsyncConnection,
    queue_name: str,
    payload: dict[str, Any],
    *,
    priority: int | None = None,
    run_at: datetime | None = None,
    max_attempts: int = 3,
    idempotency_key: str | None = None,
    concurrency_key: str | None = None,
    max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    idempotency_key_ttl: float = IDEMPOTENCY_KEY_TTL,
    cipher: PayloadCipher | None = None,
) -> uuid.UUID:
    """Insert one job in the caller's transaction; returns its id.

    With `idempotency_key`, the same key and the same job within `idempotency_key_ttl`
    seconds return the existing job's id; the same key with another job raises
    JobRejected (409).
    """
    (job_id,) = await enqueue_many(
        conn_or_session,
        [
            _item(
                queue_name,
                payload,
                priority,
                run_at,
                max_attempts,
                idempotency_key,
                concurrency_key,
            )
        ],
        max_payload_bytes=max_payload_bytes,
        idempotency_key_ttl=idempotency_key_ttl,
        cipher=cipher,
    )
    return job_id


async def enqueue_many(
    conn_or_session: AsyncSession | AsyncConnection,
    jobs: Iterable[Mapping[str, Any]],
    *,
    max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    idempotency_key_ttl: float = IDEMPOTENCY_KEY_TTL,
    cipher: PayloadCipher | None = None,
) -> list[uuid.UUID]:
    """Insert jobs (each a mapping with the fields of POST /jobs and an optional
    `idempotency_key`) in the caller's transaction, all or none; ids in order.

    Payloads are checked against the payload models of the handlers registered in this
    process, and the fields of ENCRYPTED_FIELDS are encrypted with ENCRYPTION_KEYS (read
    from the environment once) unless `cipher` is given.

    Raises JobRejected listing every bad job by index (`loc`: ["jobs", index, field]).
    """
    validated, rows = _prepare(jobs, max_payload_bytes, cipher)
    if not rows:
        return []
    conn = await _connection(conn_or_session)
    # Several jobs: a savepoint on the connection itself (a session's begin_nested() would
    # not emit one for statements run on its connection directly), so that a rejected
    # call leaves nothing behind. One job is inserted whole or not at all: no savepoint,
    # two round trips fewer.
    savepoint: contextlib.AbstractAsyncContextManager[object] = (
        conn.begin_nested() if len(rows) > 1 else contextlib.nullcontext()
    )

    async def fetch(sql: str, *args: Any) -> Sequence[Mapping[str, Any]]:
        result = await conn.exec_driver_sql(sql, args)
        if not result.returns_rows:
            return []
        rows: Sequence[Mapping[str, Any]] = result.mappings().all()  # type: ignore[assignment]
        return rows  # RowMappings are Mappings (keyed by column name): no copies

    async with savepoint:
        results = await insert_jobs(fetch, rows, key_ttl=idempotency_key_ttl)
        # Raised inside the savepoint: what this call inserted is rolled back.
        return _ids_or_raise(validated, results)


class JobClient:
    """Enqueue jobs on connections of the client's own: each call is a transaction of
    its own, committed before it returns (the job is durable and the migrator is woken).

        async with await JobClient.connect("postgresql://...") as client:
            job_id = await client.enqueue("email-sending", {"to": "a@example.com"})

    The fast path for a service that has no transaction to join: one job without an
    idempotency key is one statement and one round trip. Validation, idempotency keys
    and errors (JobRejected) are those of `enqueue` and `enqueue_many`. Safe to share
    between tasks; a pool of `max_size` connections serves concurrent calls.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        idempotency_key_ttl: float = IDEMPOTENCY_KEY_TTL,
        cipher: PayloadCipher | None = None,
        owns_pool: bool = False,
        direct: DirectPush | None = None,
    ) -> None:
        self._inserts = InsertStore(pool, direct)
        self._max_payload_bytes = max_payload_bytes
        self._key_ttl = idempotency_key_ttl
        self._cipher = cipher
        self._owns_pool = owns_pool

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 4,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        idempotency_key_ttl: float = IDEMPOTENCY_KEY_TTL,
        cipher: PayloadCipher | None = None,
        redis_url: str | None = None,
        redis_prefix: str = "",
    ) -> JobClient:
        """A client with a pool of its own on `dsn` (closed by `close()`). With
        `redis_url` (and the service's REDIS_PREFIX), a job due now is pushed to Redis
        right after its commit (app.direct), as the API does: it starts sooner than
        through the migrator. The service's REDIS_QUEUE_MAX_DEPTH, VISIBILITY_TIMEOUT
        and JOB_HASH_TTL are read from the environment like its other settings."""
        pool = await create_pool(dsn, min_size=min_size, max_size=max_size)
        direct = None
        if redis_url is not None:
            import redis.asyncio as aioredis

            from app.direct import DirectPush
            from app.keys import Keys

            settings = Settings(database_url=dsn, redis_url=redis_url, redis_prefix=redis_prefix)
            direct = DirectPush.of(
                pool, aioredis.Redis.from_url(redis_url), Keys(redis_prefix), settings
            )
        return cls(
            pool,
            max_payload_bytes=max_payload_bytes,
            idempotency_key_ttl=idempotency_key_ttl,
            cipher=cipher,
            owns_pool=True,
            direct=direct,
        )

    async def close(self) -> None:
        direct = self._inserts.direct
        if direct is not None:
            await direct.flushed()
            if self._owns_pool:  # made by connect()
                await direct.redis.aclose()
        if self._owns_pool:
            await self._inserts.pool.close()

    async def __aenter__(self) -> JobClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def enqueue(
        self,
        queue_name: str,
        payload: dict[str, Any],
        *,
        priority: int | None = None,
        run_at: datetime | None = None,
        max_attempts: int = 3,
        idempotency_key: str | None = None,
        concurrency_key: str | None = None,
    ) -> uuid.UUID:
        """Insert and commit one job; its id. Same key and same job within the key's
        TTL: the existing job's id; same key, another job: JobRejected (409)."""
        (job_id,) = await self.enqueue_many(
            [
                _item(
                    queue_name,
                    payload,
                    priority,
                    run_at,
                    max_attempts,
                    idempotency_key,
                    concurrency_key,
                )
            ]
        )
        return job_id

    async def enqueue_many(self, jobs: Iterable[Mapping[str, Any]]) -> list[uuid.UUID]:
        """Insert and commit jobs, all or none (one transaction); ids in order.

        A large batch without idempotency keys is inserted a chunk at a time, each chunk
        while the next is validated (InsertStore.insert_chunks).

        For more than one job, the cyclic garbage collector of the process is paused for
        the call, inserts included: what the call makes lives until it returns, and is
        freed then, so a collection meanwhile has nothing to free (bench: enqueue-bulk, a
        tenth of the call's time with the collector paused only while each chunk is
        prepared)."""
        items = list(jobs)
        with collector_paused() if len(items) > 1 else contextlib.nullcontext():
            return await self._enqueue_many(items)

    async def _enqueue_many(self, items: list[Mapping[str, Any]]) -> list[uuid.UUID]:
        if self._inserts.pipelines(len(items)) and all(
            item.get("idempotency_key") is None for item in items
        ):
            validated: list[BatchJob] = []
            results = await self._inserts.insert_chunks(
                self._chunks(items, validated), key_ttl=self._key_ttl
            )
            return _ids_or_raise(validated, results)
        validated, rows = _prepare(items, self._max_payload_bytes, self._cipher)
        if not rows:
            return []
        results = await self._inserts.insert_jobs(rows, key_ttl=self._key_ttl)
        return _ids_or_raise(validated, results)

    def _chunks(
        self, items: Sequence[Mapping[str, Any]], validated: list[BatchJob]
    ) -> Iterator[list[JobToInsert]]:
        """The rows of each chunk of `items`, their models appended to `validated`."""
        for models, rows in prepare_in_chunks(
            items,
            size=PIPELINE_CHUNK,
            model=BatchJob,
            max_payload_bytes=self._max_payload_bytes,
            registry=default_registry,
            cipher=self._cipher or _environment_cipher(),
            loc=("jobs",),
        ):
            validated.extend(models)
            yield rows


def _item(
    queue_name: str,
    payload: dict[str, Any],
    priority: int | None,
    run_at: datetime | None,
    max_attempts: int,
    idempotency_key: str | None,
    concurrency_key: str | None = None,
) -> dict[str, Any]:
    item: dict[str, Any] = {"queue_name": queue_name, "payload": payload}
    if priority is not None:
        item["priority"] = priority
    if run_at is not None:
        # As text: the model reads run_at as a client sends it (ISO 8601 with an offset;
        # a datetime object was refused, and a naive one still is).
        item["run_at"] = run_at.isoformat()
    item["max_attempts"] = max_attempts
    if idempotency_key is not None:
        item["idempotency_key"] = idempotency_key
    if concurrency_key is not None:
        item["concurrency_key"] = concurrency_key
    return item


def _prepare(
    jobs: Iterable[Mapping[str, Any]], max_payload_bytes: int, cipher: PayloadCipher | None
) -> tuple[list[BatchJob], list[JobToInsert]]:
    """Validate, check against the payload models and encrypt: the rows to insert, or
    JobRejected naming every bad job."""
    return prepare_jobs(
        jobs,
        model=BatchJob,
        max_payload_bytes=max_payload_bytes,
        registry=default_registry,
        cipher=cipher or _environment_cipher(),
        loc=("jobs",),
    )


def _ids_or_raise(
    validated: Sequence[BatchJob], results: Sequence[InsertResult]
) -> list[uuid.UUID]:
    """The ids, or JobRejected for unknown queues (422) and reused keys (409)."""
    ids = [r.job.id for r in results if r.job is not None]
    if len(ids) == len(results):  # every job created or found: nothing to name
        return ids
    raise_for_refused(
        validated,
        results,
        locs=[("jobs", i) for i in range(len(validated))],
        key_fields=["idempotency_key"] * len(validated),
    )
    return ids


async def _connection(conn_or_session: AsyncSession | AsyncConnection) -> AsyncConnection:
    """The AsyncConnection of a session (imported here: the caller has SQLAlchemy loaded)."""
    from sqlalchemy.ext.asyncio import AsyncSession

    if isinstance(conn_or_session, AsyncSession):
        return await conn_or_session.connection()
    return conn_or_session
