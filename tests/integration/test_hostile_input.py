"""Hostile and odd input through the API: each is refused with a clear 4xx naming what is
wrong, nothing is written, and the API goes on serving."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from app.api.auth import digest
from app.api.common import ValidationErrorOut
from app.api.pagination import encode_cursor
from app.settings import Settings
from tests.support.api import ServedApp, api_only, serve_app
from tests.support.db import count_jobs

JSON = {"content-type": "application/json"}
FORM = {"content-type": "application/x-www-form-urlencoded"}
OVERFLOWING_TIMES = ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"]
KEY = "hostile-producer-key"


def job(**fields: Any) -> dict[str, Any]:
    return {"queue_name": "email-sending", "payload": {"to": "a@example.com"}, **fields}


def locs(response: httpx.Response) -> list[list[str | int]]:
    return [e.loc for e in ValidationErrorOut.model_validate(response.json()).detail]


async def still_serving(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).status_code == 200
    created = await client.post("/jobs", json=job())
    assert created.status_code == 201, created.text


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400"])
async def test_numbers_json_has_not_are_refused_not_stored_as_null(
    client: httpx.AsyncClient, database_url: str, number: bytes
) -> None:
    single = b'{"queue_name": "email-sending", "payload": {"x": ' + number + b"}}"
    batch = b'{"jobs": [' + single + b"]}"
    for path, body in (("/jobs", single), ("/jobs/batch", batch)):
        response = await client.post(path, content=body, headers=JSON)
        assert response.status_code == 422, response.text
        error = ValidationErrorOut.model_validate(response.json()).detail[0]
        assert error.type == "json_invalid"
        assert "NaN or Infinity" in error.msg
    assert await count_jobs(database_url) == 0
    await still_serving(client)


async def test_a_payload_round_trips_unchanged(client: httpx.AsyncClient) -> None:
    payload = {"big": 1e308, "tiny": 5e-324, "exact": 9007199254740993, "f": 0.1, "s": "é\n"}
    created = await client.post("/jobs", json=job(payload=payload))
    assert created.status_code == 201, created.text
    listed = (await client.get("/jobs", params={"queue_name": "email-sending"})).json()
    assert [item["payload"] for item in listed["items"]] == [payload]


@pytest.mark.parametrize("value", [b"NaN", b"Infinity", b"1e400"])
async def test_a_non_finite_priority_is_a_422_not_a_500(
    client: httpx.AsyncClient, database_url: str, value: bytes
) -> None:
    body = b'{"queue_name": "email-sending", "payload": {}, "priority": ' + value + b"}"
    response = await client.post("/jobs", content=body, headers=JSON)
    assert response.status_code == 422, response.text
    assert await count_jobs(database_url) == 0
    await still_serving(client)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"priority": True}, "priority"),
        ({"priority": False}, "priority"),
        ({"priority": "5"}, "priority"),
        ({"priority": 5.0}, "priority"),
        ({"max_attempts": True}, "max_attempts"),
        ({"max_attempts": "3"}, "max_attempts"),
    ],
)
async def test_numbers_must_be_numbers_not_booleans_or_strings(
    client: httpx.AsyncClient, database_url: str, fields: dict[str, Any], field: str
) -> None:
    response = await client.post("/jobs", json=job(**fields))
    assert response.status_code == 422, response.text
    assert locs(response) == [["body", field]]
    batch = await client.post("/jobs/batch", json={"jobs": [job(), job(**fields)]})
    assert batch.status_code == 422, batch.text
    assert locs(batch) == [["body", "jobs", 1, field]]
    assert await count_jobs(database_url) == 0


async def test_queue_settings_are_strict_too(client: httpx.AsyncClient) -> None:
    for body, field in (
        ({"name": "t-strict", "default_priority": True}, "default_priority"),
        ({"name": "t-strict", "is_active": 1}, "is_active"),
        ({"name": "t-strict", "is_active": "yes"}, "is_active"),
    ):
        response = await client.post("/queues", json=body)
        assert response.status_code == 422, response.text
        assert locs(response) == [["body", field]]
    patched = await client.patch("/queues/email-sending", json={"default_priority": True})
    assert patched.status_code == 422
    assert locs(patched) == [["body", "default_priority"]]


@pytest.mark.parametrize("when", OVERFLOWING_TIMES)
async def test_times_beyond_the_utc_range_are_a_422_naming_the_field(
    client: httpx.AsyncClient, database_url: str, when: str
) -> None:
    response = await client.post("/jobs", json=job(run_at=when))
    assert response.status_code == 422, response.text
    assert locs(response) == [["body", "run_at"]]
    assert "UTC" in response.json()["detail"][0]["msg"]

    batch = await client.post("/jobs/batch", json={"jobs": [job(run_at=when)]})
    assert batch.status_code == 422
    assert locs(batch) == [["body", "jobs", 0, "run_at"]]

    for path, name in (
        ("/jobs", "created_from"),
        ("/jobs", "created_to"),
        ("/dead-letter", "failed_since"),
    ):
        listed = await client.get(path, params={name: when})
        assert listed.status_code == 422, (path, name, listed.text)
        assert locs(listed) == [["query", name]]

    replay = await client.post(
        "/dead-letter/replay", json={"queue_name": "email-sending", "failed_since": when}
    )
    assert replay.status_code == 422
    assert locs(replay) == [["body", "failed_since"]]

    cursor = encode_cursor(when, "00000000-0000-0000-0000-000000000000")
    for path in ("/jobs", "/dead-letter"):
        paged = await client.get(path, params={"cursor": cursor})
        assert paged.status_code == 422, (path, paged.text)
        assert locs(paged) == [["query", "cursor"]]
    assert await count_jobs(database_url) == 0
    await still_serving(client)


async def test_a_body_that_never_ends_is_a_408(settings: Settings, clean_db: None) -> None:
    never = asyncio.Event()  # set by nobody: the client stops sending mid-body

    async def stalled_body() -> AsyncIterator[bytes]:
        yield b'{"queue_name": "email-sending", '
        await never.wait()

    async with serve_app(api_only(settings, request_body_timeout=0.2)) as served:
        response = await served.client.post("/jobs", content=stalled_body(), headers=JSON)
        assert response.status_code == 408
        assert response.json()["detail"][0]["type"] == "timeout"
        assert await served.runtime.pool.fetchval("SELECT count(*) FROM jobs") == 0
        await still_serving(served.client)


async def test_post_jobs_has_a_smaller_body_limit_than_the_batch(
    settings: Settings, clean_db: None
) -> None:
    limited = api_only(settings, max_job_request_bytes=2048)
    body = job(payload={"blob": "x" * 3000})
    async with serve_app(limited) as served:
        single = await served.client.post("/jobs", json=body)
        assert single.status_code == 413
        assert "2048" in single.json()["detail"][0]["msg"]
        batch = await served.client.post("/jobs/batch", json={"jobs": [body]})
        assert batch.status_code == 201, batch.text


@pytest.fixture
async def keyed(settings: Settings, clean_db: None) -> AsyncIterator[ServedApp]:
    keys = [f"billing:producer:sha256:{digest(KEY).hex()}"]
    limited = api_only(
        settings, auth_enabled=True, api_keys=keys, max_request_bytes=4096, max_json_depth=5
    )
    async with serve_app(limited) as served:
        yield served


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"queue_name": "email-sending", "payload": {"x": NaN}}',
        b"[" * 100 + b"]" * 100,
        b'{"queue_name": "email-sending", "payload": {"blob": "' + b"x" * 5000 + b'"}}',
    ],
    ids=["malformed", "nan", "too-deep", "too-large"],
)
async def test_without_a_key_the_answer_is_401_whatever_the_body(
    keyed: ServedApp, body: bytes
) -> None:
    for path in ("/jobs", "/jobs/batch", "/dead-letter/replay", "/queues"):
        anonymous = await keyed.client.post(path, content=body, headers=JSON)
        assert anonymous.status_code == 401, (path, anonymous.text)
        assert anonymous.headers["www-authenticate"] == "Bearer"
        assert "missing API key" in anonymous.json()["detail"]
        wrong = await keyed.client.post(
            path, content=body, headers={**JSON, "Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 401
    # With the key, the same body gets the 4xx that says what is wrong with it.
    known = await keyed.client.post(
        "/jobs", content=body, headers={**JSON, "Authorization": f"Bearer {KEY}"}
    )
    assert known.status_code in (413, 422)
    assert await keyed.runtime.pool.fetchval("SELECT count(*) FROM jobs") == 0


async def test_every_operation_that_takes_a_body_needs_a_key(keyed: ServedApp) -> None:
    # The gate (app.api.gate) refuses every body without a key: that is only right while
    # no public operation takes one.
    spec = (await keyed.client.get("/openapi.json")).json()
    with_body = [
        (method, path)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if "requestBody" in operation or method in ("post", "put", "patch", "delete")
    ]
    assert with_body
    for method, path in with_body:
        operation = spec["paths"][path][method]
        assert operation.get("security"), f"{method.upper()} {path} is public"


def test_the_validation_error_handler_serialises_any_input() -> None:
    from fastapi.exceptions import RequestValidationError

    from app.api.errors import validation_errors

    exc = RequestValidationError(
        [
            {"loc": ("body", "priority"), "msg": "bad", "type": "int_type", "input": float("nan")},
            {"loc": ("body", "n"), "msg": "bad", "type": "x", "input": 10**100},
        ]
    )
    assert orjson.loads(orjson.dumps({"detail": validation_errors(exc)})) == {
        "detail": [
            {"loc": ["body", "priority"], "msg": "bad", "type": "int_type"},
            {"loc": ["body", "n"], "msg": "bad", "type": "x"},
        ]
    }


async def test_dashboard_forms_pass_the_gate_only_small_and_with_a_declared_length(
    keyed: ServedApp,
) -> None:
    # A browser's form has no Authorization header: the dashboard authenticates it itself
    # (the login form's key, or the session and CSRF token), so the gate lets it by, but
    # only a small body whose length is declared.
    login = await keyed.client.post("/dashboard/login", data={"key": "nope", "token": "x"})
    assert login.status_code not in (401, 411, 413)
    big = await keyed.client.post("/dashboard/login", content=b"key=" + b"x" * 20_000, headers=FORM)
    assert big.status_code == 413
    assert "at most" in big.json()["detail"]

    async def chunks() -> AsyncIterator[bytes]:
        yield b"key=x"

    undeclared = await keyed.client.post("/dashboard/login", content=chunks(), headers=FORM)
    assert undeclared.status_code == 411
    assert await keyed.runtime.pool.fetchval("SELECT count(*) FROM job_logs") == 0
