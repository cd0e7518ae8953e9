"""POST /jobs and GET /jobs/{id} against the real app, PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from app.api.common import MessageOut, ValidationErrorOut
from app.api.jobs.schemas import JobStatusOut
from app.settings import Settings
from tests.conftest import delete_prefix
from tests.support.api import ServedApp, api_only, serve_app
from tests.support.db import count_jobs, wait_for_a_lock_wait

PAYLOAD_LIMIT = 1024

STATUS_FIELDS = {
    "job_id",
    "queue_name",
    "status",
    "priority",
    "attempt_count",
    "max_attempts",
    "created_at",
    "started_at",
    "completed_at",
    "failed_at",
    "last_error_message",
    "redis_status",
    "worker_id",
}


@pytest.fixture
async def api(settings: Settings, clean_db: None) -> AsyncIterator[ServedApp]:
    """The API alone (no embedded migrator or worker), with a small payload limit."""
    async with serve_app(api_only(settings, max_payload_bytes=PAYLOAD_LIMIT)) as served:
        try:
            yield served
        finally:
            await delete_prefix(served.runtime.redis, settings.redis_prefix)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


def job_body(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"queue_name": "email-sending", "payload": {"to": "a@example.com"}}
    body.update(fields)
    return body


def payload_of_size(size: int) -> dict[str, str]:
    """A payload whose JSON encoding is exactly `size` bytes."""
    overhead = len(orjson.dumps({"x": ""}))
    payload = {"x": "a" * (size - overhead)}
    assert len(orjson.dumps(payload)) == size
    return payload


# --- creating jobs ----------------------------------------------------------------------


async def test_create_answers_201_with_the_stored_job(
    api: ServedApp, db: asyncpg.Connection
) -> None:
    before = datetime.now(UTC)
    response = await api.client.post("/jobs", json=job_body())

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"job_id", "status", "queue_name", "priority"}
    assert body["status"] == "queued"
    assert body["queue_name"] == "email-sending"
    assert body["priority"] == 100  # the queue's default_priority

    row = await db.fetchrow("SELECT * FROM jobs WHERE id = $1", uuid.UUID(body["job_id"]))
    assert row is not None
    assert row["status"] == "queued"
    assert row["priority"] == 100
    assert row["max_attempts"] == 3
    assert row["attempt_count"] == 0
    assert orjson.loads(row["payload"]) == {"to": "a@example.com"}
    assert before - timedelta(seconds=5) <= row["run_at"] <= datetime.now(UTC)


async def test_omitted_priority_is_the_queues_default_priority(
    api: ServedApp, db: asyncpg.Connection
) -> None:
    await db.execute("INSERT INTO job_queues (name, default_priority) VALUES ('t-urgent', 20)")

    default = await api.client.post("/jobs", json=job_body(queue_name="t-urgent"))
    explicit = await api.client.post("/jobs", json=job_body(queue_name="t-urgent", priority=700))
    explicit_null = await api.client.post(
        "/jobs", json=job_body(queue_name="t-urgent", priority=None)
    )

    assert default.status_code == 201
    assert default.json()["priority"] == 20
    assert explicit.json()["priority"] == 700
    assert explicit_null.json()["priority"] == 20


async def test_create_stores_priority_run_at_and_max_attempts_as_given(
    api: ServedApp, db: asyncpg.Connection
) -> None:
    response = await api.client.post(
        "/jobs",
        json=job_body(priority=0, run_at="2030-01-02T03:04:05.5+02:00", max_attempts=100),
    )

    assert response.status_code == 201
    assert response.json()["priority"] == 0
    row = await db.fetchrow(
        "SELECT priority, run_at, max_attempts FROM jobs WHERE id = $1",
        uuid.UUID(response.json()["job_id"]),
    )
    assert row is not None
    assert row["priority"] == 0
    assert row["max_attempts"] == 100
    # The same instant as the one asked for, whatever the offset it was written with.
    assert row["run_at"] == datetime(2030, 1, 2, 1, 4, 5, 500_000, tzinfo=UTC)


@pytest.mark.parametrize(
    "fields",
    [
        {"priority": 0},
        {"priority": 1000},
        {"max_attempts": 1},
        {"max_attempts": 100},
        {"payload": {}},
        {"payload": payload_of_size(PAYLOAD_LIMIT)},
        {"run_at": "2026-11-28T09:00:00Z"},
        {"run_at": "2026-11-28T09:00:00-05:30"},
    ],
    ids=repr,
)
async def test_values_on_the_bounds_are_accepted(api: ServedApp, fields: dict[str, Any]) -> None:
    response = await api.client.post("/jobs", json=job_body(**fields))
    assert response.status_code == 201, response.text


# (fields to set on a valid body, expected status, the field the error must name)
REJECTED: list[tuple[dict[str, Any], int, str]] = [
    ({"queue_name": "no-such-queue"}, 422, "queue_name"),
    ({"queue_name": ""}, 422, "queue_name"),
    ({"payload": ["a", "list"]}, 422, "payload"),
    ({"payload": "a string"}, 422, "payload"),
    ({"payload": None}, 422, "payload"),
    ({"payload": payload_of_size(PAYLOAD_LIMIT + 1)}, 413, "payload"),
    ({"priority": -1}, 422, "priority"),
    ({"priority": 1001}, 422, "priority"),
    ({"priority": 1.5}, 422, "priority"),
    ({"max_attempts": 0}, 422, "max_attempts"),
    ({"max_attempts": 101}, 422, "max_attempts"),
    ({"run_at": "tomorrow"}, 422, "run_at"),
    ({"run_at": "2026-11-28T09:00:00"}, 422, "run_at"),  # no offset
    ({"run_at": "2026-11-28"}, 422, "run_at"),
    # Digits are not ISO 8601; read as a Unix time, "20261128" would be 1970-08-23.
    ({"run_at": "20261128"}, 422, "run_at"),
    ({"run_at": 1_900_000_000}, 422, "run_at"),
    ({"priorty": 5}, 422, "priorty"),  # a misspelt field is an unknown extra field
]


@pytest.mark.parametrize(
    ("fields", "status", "field"), REJECTED, ids=[repr(f)[:60] for f, _, _ in REJECTED]
)
async def test_bad_input_is_rejected_naming_the_field_and_nothing_is_written(
    api: ServedApp, database_url: str, fields: dict[str, Any], status: int, field: str
) -> None:
    response = await api.client.post("/jobs", json=job_body(**fields))

    assert response.status_code == status, response.text
    errors = ValidationErrorOut.model_validate(response.json()).detail
    assert [e.loc for e in errors] == [["body", field]]
    assert errors[0].msg
    assert await count_jobs(database_url) == 0


async def test_a_missing_field_and_a_body_that_is_not_json_are_rejected(
    api: ServedApp, database_url: str
) -> None:
    missing = await api.client.post("/jobs", json={"queue_name": "email-sending"})
    not_json = await api.client.post(
        "/jobs", content=b"{not json", headers={"content-type": "application/json"}
    )

    assert missing.status_code == 422
    assert [e.loc for e in ValidationErrorOut.model_validate(missing.json()).detail] == [
        ["body", "payload"]
    ]
    assert not_json.status_code == 422
    assert ValidationErrorOut.model_validate(not_json.json()).detail[0].type == "json_invalid"
    assert await count_jobs(database_url) == 0


async def test_the_413_says_how_big_the_payload_is_and_what_the_limit_is(
    api: ServedApp,
) -> None:
    response = await api.client.post(
        "/jobs", json=job_body(payload=payload_of_size(PAYLOAD_LIMIT + 1))
    )

    assert response.status_code == 413
    msg = response.json()["detail"][0]["msg"]
    assert str(PAYLOAD_LIMIT + 1) in msg
    assert str(PAYLOAD_LIMIT) in msg


async def test_a_job_for_a_paused_queue_is_accepted_and_waits(
    api: ServedApp, db: asyncpg.Connection
) -> None:
    await db.execute(
        "INSERT INTO job_queues (name, is_active) VALUES ('t-paused', false), ('t-active', true)"
    )
    paused = await api.client.post("/jobs", json=job_body(queue_name="t-paused"))
    active = await api.client.post("/jobs", json=job_body(queue_name="t-active"))
    assert paused.status_code == 201
    assert paused.json()["status"] == "queued"
    paused_id, active_id = paused.json()["job_id"], active.json()["job_id"]
    migrator = api.runtime.migrator()

    await migrator.move_due_jobs()

    assert (await api.client.get(f"/jobs/{paused_id}")).json()["status"] == "queued"
    assert (await api.client.get(f"/jobs/{active_id}")).json()["status"] == "migrated_to_redis"

    # Resumed, the queue's waiting job moves like any other.
    await db.execute("UPDATE job_queues SET is_active = true WHERE name = 't-paused'")
    await migrator.move_due_jobs()
    assert (await api.client.get(f"/jobs/{paused_id}")).json()["status"] == "migrated_to_redis"


# --- reading jobs -----------------------------------------------------------------------


async def test_get_answers_every_documented_field(api: ServedApp) -> None:
    created = await api.client.post("/jobs", json=job_body(priority=42, max_attempts=5))
    job_id = created.json()["job_id"]

    response = await api.client.get(f"/jobs/{job_id}")

    assert response.status_code == 200
    body = response.json()
    assert set(body) >= STATUS_FIELDS
    JobStatusOut.model_validate(body)
    assert body["job_id"] == job_id
    assert body["queue_name"] == "email-sending"
    assert body["status"] == "queued"
    assert body["priority"] == 42
    assert body["attempt_count"] == 0
    assert body["max_attempts"] == 5
    assert datetime.fromisoformat(body["created_at"]) <= datetime.now(UTC)
    for not_yet in ("started_at", "completed_at", "failed_at", "last_error_message"):
        assert body[not_yet] is None
    assert body["worker_id"] is None
    assert body["redis_status"] == "not_in_redis"


async def test_get_shows_the_real_time_state_from_redis(api: ServedApp) -> None:
    created = await api.client.post("/jobs", json=job_body())
    job_id = created.json()["job_id"]

    await api.runtime.migrator().move_due_jobs()

    body = (await api.client.get(f"/jobs/{job_id}")).json()
    assert body["status"] == "migrated_to_redis"
    assert body["redis_status"] == "migrated_to_redis"


async def test_get_an_unknown_job_is_404(api: ServedApp) -> None:
    response = await api.client.get(f"/jobs/{uuid.uuid4()}")

    assert response.status_code == 404
    assert MessageOut.model_validate(response.json()).detail == "job not found"


@pytest.mark.parametrize("job_id", ["not-a-uuid", "123", "0b9d6f7e-3f7c-4a36-9a51-2f7f1b0e9c1"])
async def test_get_a_malformed_id_is_422_naming_the_id(api: ServedApp, job_id: str) -> None:
    response = await api.client.get(f"/jobs/{job_id}")

    assert response.status_code == 422
    errors = ValidationErrorOut.model_validate(response.json()).detail
    assert [e.loc for e in errors] == [["path", "job_id"]]


# --- PostgreSQL going away under a request ----------------------------------------------


async def test_create_is_503_when_postgresql_ends_the_connection_mid_request(
    api: ServedApp, db: asyncpg.Connection, database_url: str
) -> None:
    """What a PostgreSQL restart does to a request in flight: the server ends the session
    (57P01). The client is told to retry (503), not that the server broke (500)."""
    await db.execute("INSERT INTO job_queues (name) VALUES ('t-locked')")
    holder = await asyncpg.connect(database_url)
    try:
        # Hold the queue row so that the insert's foreign-key check waits on it.
        async with holder.transaction():
            await holder.execute("SELECT 1 FROM job_queues WHERE name = 't-locked' FOR UPDATE")
            request = asyncio.create_task(
                api.client.post("/jobs", json=job_body(queue_name="t-locked"))
            )
            waiting_pid = await wait_for_a_lock_wait(db)
            await db.execute("SELECT pg_terminate_backend($1)", waiting_pid)
            response = await asyncio.wait_for(request, 10)
    finally:
        await holder.close()

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert await count_jobs(database_url) == 0


async def test_what_postgres_cannot_store_is_refused_by_name(client: httpx.AsyncClient) -> None:
    """Found by the fuzzer: a NUL in the payload or an integer beyond 64 bits was a 500."""
    nul = await client.post(
        "/jobs", json={"queue_name": "email-sending", "payload": {"a": "x\x00"}}
    )
    assert nul.status_code == 422
    assert nul.json()["detail"][0]["loc"] == ["body", "payload"]
    assert nul.json()["detail"][0]["type"] == "nul_character"
    huge = await client.post("/jobs", json={"queue_name": "email-sending", "payload": {"n": 2**70}})
    assert huge.status_code == 422
    assert huge.json()["detail"][0]["type"] == "unencodable"
    ctl = await client.post("/jobs", json={"queue_name": "email\x00", "payload": {}})
    assert ctl.status_code == 422
    assert ctl.json()["detail"][0]["loc"] == ["body", "queue_name"]
    # A backslash-u sequence written out as text is ordinary text.
    text = await client.post(
        "/jobs", json={"queue_name": "email-sending", "payload": {"a": "\\u0000"}}
    )
    assert text.status_code == 201
