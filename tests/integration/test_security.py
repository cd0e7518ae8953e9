"""Access control, payload schemas, encryption at rest and request limits, through the
real app (lifespan included) on real PostgreSQL and Redis."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from cryptography.fernet import Fernet
from pydantic import BaseModel, Field

from app.api.auth import digest
from app.main import create_app
from app.registry import HandlerRegistry, Job
from app.settings import Settings
from tests.support.api import api_only, serve_app
from tests.support.factories import run_until_settled

PRODUCER_KEY = "producer-secret-1"
ADMIN_KEY = "admin-secret-2"


def keyed(settings: Settings, **extra: object) -> Settings:
    return api_only(
        settings,
        auth_enabled=True,
        api_keys=[
            f"billing:producer:sha256:{digest(PRODUCER_KEY).hex()}",
            f"ops:admin:sha256:{digest(ADMIN_KEY).hex()}",
        ],
        **extra,
    )


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def client(settings: Settings, clean_db: None) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_app(keyed(settings)) as served:
        yield served.client


JOB = {"queue_name": "email-sending", "payload": {"to": "a@example.com"}}


async def test_producer_routes_need_a_key_with_the_scope(client: httpx.AsyncClient) -> None:
    none = await client.post("/jobs", json=JOB)
    assert none.status_code == 401
    assert none.headers["www-authenticate"] == "Bearer"
    assert "missing API key" in none.json()["detail"]
    wrong = await client.post("/jobs", json=JOB, headers=bearer("not-a-key"))
    assert wrong.status_code == 401
    assert wrong.json() == {"detail": "invalid API key"}

    as_producer = await client.post("/jobs", json=JOB, headers=bearer(PRODUCER_KEY))
    assert as_producer.status_code == 201
    as_admin = await client.post("/jobs", json=JOB, headers=bearer(ADMIN_KEY))
    assert as_admin.status_code == 201

    job_id = as_producer.json()["job_id"]
    assert (await client.get(f"/jobs/{job_id}")).status_code == 401
    assert (await client.get(f"/jobs/{job_id}", headers=bearer(PRODUCER_KEY))).status_code == 200


async def test_a_rejected_key_writes_nothing(client: httpx.AsyncClient, settings: Settings) -> None:
    import asyncpg

    await client.post("/jobs", json=JOB, headers=bearer("nope"))
    conn = await asyncpg.connect(settings.database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM jobs") == 0
    finally:
        await conn.close()


async def test_health_and_docs_stay_public(client: httpx.AsyncClient) -> None:
    for path in ("/health", "/health/ready", "/docs", "/openapi.json"):
        assert (await client.get(path)).status_code == 200, path
    spec = (await client.get("/openapi.json")).json()
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


def test_auth_on_without_keys_refuses_to_start(settings: Settings) -> None:
    with pytest.raises(RuntimeError, match="API_KEYS is empty"):
        create_app(settings.replace(auth_enabled=True, api_keys=[]))
    with pytest.raises(ValueError, match="scope must be one of"):
        create_app(settings.replace(auth_enabled=True, api_keys=["a:root:x"]))


def test_the_api_entrypoint_refuses_to_start_without_keys(settings: Settings) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": settings.database_url,
        "AUTH_ENABLED": "true",
        "API_KEYS": "",
    }
    done = subprocess.run(
        [sys.executable, "-m", "app", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "API_KEYS is empty" in done.stderr


async def test_plain_text_keys_work_and_are_warned_about(
    settings: Settings, clean_db: None, caplog: pytest.LogCaptureFixture
) -> None:
    plain = api_only(settings, auth_enabled=True, api_keys=["dev:admin:dev-admin-key"])
    async with serve_app(plain) as served:
        r = await served.client.post("/jobs", json=JOB, headers=bearer("dev-admin-key"))
        assert r.status_code == 201
    assert "configured in plain text" in caplog.text


class Email(BaseModel):
    to: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    subject: str


async def test_a_payload_that_does_not_match_the_queue_schema_is_rejected(
    settings: Settings, clean_db: None
) -> None:
    registry = HandlerRegistry()

    @registry.handler("t-schema", payload_model=Email)
    async def send(job: Job) -> None:
        return None

    async with serve_app(api_only(settings), registry) as served:
        bad = await served.client.post(
            "/jobs", json={"queue_name": "t-schema", "payload": {"to": "not-an-address"}}
        )
        assert bad.status_code == 422
        problems = {tuple(e["loc"]): e["type"] for e in bad.json()["detail"]}
        assert problems == {
            ("body", "payload", "to"): "string_pattern_mismatch",
            ("body", "payload", "subject"): "missing",
        }
        assert await served.runtime.pool.fetchval("SELECT count(*) FROM jobs") == 0
        good = await served.client.post(
            "/jobs",
            json={"queue_name": "t-schema", "payload": {"to": "a@b.example", "subject": "Hi"}},
        )
        assert good.status_code == 201


async def test_sensitive_fields_are_encrypted_in_postgres_and_redis(
    settings: Settings, clean_db: None
) -> None:
    secret = "Dear Ada, your code is 911-4432"
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    registry = HandlerRegistry()
    seen: list[dict[str, object]] = []

    @registry.handler("t-secret")
    async def send(job: Job) -> None:
        seen.append(job.payload)

    encrypted = api_only(
        settings,
        encryption_keys=[old_key],
        encrypted_fields={"t-secret": ["email_data"]},
    )
    async with serve_app(encrypted, registry) as served:
        rt = served.runtime
        r = await served.client.post(
            "/jobs",
            json={
                "queue_name": "t-secret",
                "payload": {"email_data": {"body": secret}, "campaign": "c-1"},
            },
        )
        assert r.status_code == 201
        raw_row = await rt.pool.fetchval("SELECT payload::text FROM jobs")
        assert "911-4432" not in raw_row
        assert "c-1" in raw_row  # only the configured field is encrypted
        await rt.migrator().move_due_jobs()
        entries = await rt.redis.lrange(rt.keys.route("t-secret", 100), 0, -1)
        raw_redis = b"".join(e if isinstance(e, bytes) else e.encode() for e in entries)
        assert raw_redis and b"911-4432" not in raw_redis
        assert b"$encrypted" in raw_redis

    # Rotation: a new key first, the old one kept, and the job still decrypts.
    rotated = encrypted.replace(encryption_keys=[new_key, old_key])
    async with serve_app(rotated, registry) as served:
        await run_until_settled(served.runtime)
    assert seen == [{"email_data": {"body": secret}, "campaign": "c-1"}]


async def test_a_payload_no_key_can_decrypt_fails_its_attempt(
    settings: Settings, clean_db: None
) -> None:
    registry = HandlerRegistry()

    @registry.handler("t-secret")
    async def send(job: Job) -> None:
        raise AssertionError("must not run")

    encrypted = api_only(
        settings,
        encryption_keys=[Fernet.generate_key().decode()],
        encrypted_fields={"t-secret": ["email_data"]},
    )
    async with serve_app(encrypted, registry) as served:
        r = await served.client.post(
            "/jobs",
            json={"queue_name": "t-secret", "payload": {"email_data": "x"}, "max_attempts": 1},
        )
        job_id = r.json()["job_id"]
    lost_key = encrypted.replace(encryption_keys=[Fernet.generate_key().decode()])
    async with serve_app(lost_key, registry) as served:
        await run_until_settled(served.runtime)
        row = await served.runtime.pool.fetchrow(
            "SELECT status, last_error_message FROM jobs WHERE id = $1::uuid", job_id
        )
    assert row is not None
    assert row["status"] == "failed"
    assert "cannot be decrypted" in row["last_error_message"]


async def test_limits_apply_before_the_body_is_parsed(settings: Settings, clean_db: None) -> None:
    limited = api_only(settings, max_request_bytes=2048, max_json_depth=5)
    async with serve_app(limited) as served:
        big = {"queue_name": "email-sending", "payload": {"blob": "x" * 4000}}
        r = await served.client.post("/jobs", json=big)
        assert r.status_code == 413
        assert r.json()["detail"][0]["type"] == "too_large"

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
            body = orjson.dumps(big)
            for i in range(0, len(body), 512):
                yield body[i : i + 512]

        r = await served.client.post(
            "/jobs", content=chunks(), headers={"content-type": "application/json"}
        )
        assert r.status_code == 413

        deep: object = "leaf"
        for _ in range(6):
            deep = {"d": deep}
        r = await served.client.post("/jobs", json={"queue_name": "email-sending", "payload": deep})
        assert r.status_code == 422
        assert r.json()["detail"][0]["type"] == "too_deep"
        # Brackets inside strings are not nesting.
        r = await served.client.post(
            "/jobs",
            json={"queue_name": "email-sending", "payload": {"s": "[[[[[[[[{{{{{{"}},
        )
        assert r.status_code == 201
        assert await served.runtime.pool.fetchval("SELECT count(*) FROM jobs") == 1
