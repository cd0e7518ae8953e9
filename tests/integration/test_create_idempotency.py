"""POST /jobs with Idempotency-Key, and POST /jobs/batch, on real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from app.runtime import Runtime
from app.settings import Settings
from tests.support.factories import add_queue


async def job_count(rt: Runtime, queue: str) -> int:
    n: int = await rt.pool.fetchval("SELECT count(*) FROM jobs WHERE queue_name = $1", queue)
    return n


async def test_the_same_key_and_body_answer_the_first_answer_again(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    rt = runtime
    await add_queue(rt, "t-idem", default_priority=70)
    body = {"queue_name": "t-idem", "payload": {"order": 1}}
    headers = {"Idempotency-Key": "order-1"}

    first = await client.post("/jobs", json=body, headers=headers)
    # The job moves on meanwhile: the repeat still answers as the first answer did.
    await rt.pool.execute("UPDATE jobs SET status = 'completed'")
    again = await client.post("/jobs", json=body, headers=headers)

    assert first.status_code == 201, first.text
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert first.json()["priority"] == 70
    assert await job_count(rt, "t-idem") == 1
    row = await rt.pool.fetchrow("SELECT idempotency_key, request_hash FROM jobs")
    assert row is not None
    assert row["idempotency_key"] == "order-1" and len(row["request_hash"]) == 64

    # Without a key, every request is a new job.
    await client.post("/jobs", json=body)
    await client.post("/jobs", json=body)
    assert await job_count(rt, "t-idem") == 3


async def test_the_same_key_with_another_body_is_409(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    rt = runtime
    await add_queue(rt, "t-idem409")
    headers = {"Idempotency-Key": "k-409"}
    ok = await client.post(
        "/jobs", json={"queue_name": "t-idem409", "payload": {"n": 1}}, headers=headers
    )
    assert ok.status_code == 201
    other = await client.post(
        "/jobs", json={"queue_name": "t-idem409", "payload": {"n": 2}}, headers=headers
    )
    assert other.status_code == 409
    assert other.json()["detail"][0]["loc"] == ["body", "Idempotency-Key"]
    assert other.json()["detail"][0]["type"] == "idempotency_key_reused"
    assert await job_count(rt, "t-idem409") == 1
    # The same instant written with another offset is the same request.
    at_utc = {"queue_name": "t-idem409", "payload": {}, "run_at": "2030-01-01T10:00:00Z"}
    at_paris = {**at_utc, "run_at": "2030-01-01T11:00:00+01:00"}
    key = {"Idempotency-Key": "k-time"}
    assert (await client.post("/jobs", json=at_utc, headers=key)).status_code == 201
    assert (await client.post("/jobs", json=at_paris, headers=key)).status_code == 200


async def test_twenty_concurrent_identical_requests_make_one_job(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    rt = runtime
    await add_queue(rt, "t-idem20")
    body = {"queue_name": "t-idem20", "payload": {"invoice": "inv-20"}, "priority": 30}
    headers = {"Idempotency-Key": "invoice-inv-20"}

    answers = await asyncio.gather(
        *(client.post("/jobs", json=body, headers=headers) for _ in range(20))
    )

    codes = sorted(a.status_code for a in answers)
    assert codes == [200] * 19 + [201], [a.text for a in answers]
    assert len({a.json()["job_id"] for a in answers}) == 1
    assert await job_count(rt, "t-idem20") == 1


async def test_a_key_older_than_the_window_is_free_again(
    runtime: Runtime, client: httpx.AsyncClient, settings: Settings
) -> None:
    rt = runtime
    settings.idempotency_key_ttl = 3600
    await add_queue(rt, "t-idem-ttl")
    headers = {"Idempotency-Key": "nightly-2026-11-27"}
    body = {"queue_name": "t-idem-ttl", "payload": {}}
    first = (await client.post("/jobs", json=body, headers=headers)).json()
    await rt.pool.execute("UPDATE jobs SET created_at = now() - interval '61 minutes'")

    second = await client.post("/jobs", json={**body, "priority": 5}, headers=headers)

    assert second.status_code == 201
    assert second.json()["job_id"] != first["job_id"]
    keys = await rt.pool.fetch("SELECT id, idempotency_key FROM jobs ORDER BY created_at")
    assert [(str(r["id"]), r["idempotency_key"]) for r in keys] == [
        (first["job_id"], None),
        (second.json()["job_id"], "nightly-2026-11-27"),
    ]


async def test_a_batch_is_one_transaction(runtime: Runtime, client: httpx.AsyncClient) -> None:
    rt = runtime
    await add_queue(rt, "t-batch-ok", default_priority=120)
    jobs: list[dict[str, Any]] = [
        {"queue_name": "t-batch-ok", "payload": {"n": n}} for n in range(1000)
    ]
    jobs[7]["priority"] = 10

    response = await client.post("/jobs/batch", json={"jobs": jobs})

    assert response.status_code == 201, response.text[:500]
    items = response.json()["jobs"]
    assert [i["index"] for i in items] == list(range(1000))
    assert all(i["created"] and i["status"] == "queued" for i in items)
    assert items[7]["priority"] == 10 and items[8]["priority"] == 120
    assert await job_count(rt, "t-batch-ok") == 1000
    payload = await rt.pool.fetchval(
        "SELECT payload FROM jobs WHERE id = $1", uuid.UUID(items[999]["job_id"])
    )
    assert payload == {"n": 999}
    assert (await rt.migrator().move_due_jobs()).moved == 1000

    too_many = await client.post("/jobs/batch", json={"jobs": jobs + jobs[:1]})
    assert too_many.status_code == 422
    assert too_many.json()["detail"][0]["loc"][:2] == ["body", "jobs"]


async def test_a_batch_with_bad_items_writes_nothing_and_names_each(
    runtime: Runtime, client: httpx.AsyncClient, settings: Settings
) -> None:
    rt = runtime
    settings.max_payload_bytes = 100
    await add_queue(rt, "t-batch-bad")
    jobs: list[dict[str, Any]] = [
        {"queue_name": "t-batch-bad", "payload": {}},
        {"queue_name": "t-batch-bad", "payload": {}, "priority": 5000},
        {"queue_name": "t-batch-bad", "payload": {}},
        {"queue_name": "t-batch-bad", "payload": {"x": "y" * 200}},
        {"queue_name": "t-batch-bad", "payload": {}, "colour": "red"},
    ]
    response = await client.post("/jobs/batch", json={"jobs": jobs})
    assert response.status_code == 422
    errors = {(tuple(e["loc"]), e["type"]) for e in response.json()["detail"]}
    assert errors == {
        (("body", "jobs", 1, "priority"), "less_than_equal"),
        (("body", "jobs", 3, "payload"), "too_large"),
        (("body", "jobs", 4, "colour"), "extra_forbidden"),
    }

    # Valid shapes but a queue that does not exist: found by the insert, rolled back.
    jobs = [
        {"queue_name": "t-batch-bad", "payload": {}},
        {"queue_name": "no-such-queue", "payload": {}},
    ]
    response = await client.post("/jobs/batch", json={"jobs": jobs})
    assert response.status_code == 422
    assert response.json()["detail"] == [
        {
            "loc": ["body", "jobs", 1, "queue_name"],
            "msg": "unknown queue 'no-such-queue'",
            "type": "unknown_queue",
        }
    ]
    assert await job_count(rt, "t-batch-bad") == 0


async def test_batch_items_with_idempotency_keys(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    rt = runtime
    await add_queue(rt, "t-batch-key")
    a = {"queue_name": "t-batch-key", "payload": {"a": 1}, "idempotency_key": "a"}
    b = {"queue_name": "t-batch-key", "payload": {"b": 1}, "idempotency_key": "b"}
    first = await client.post("/jobs/batch", json={"jobs": [a, b, a]})
    assert first.status_code == 201, first.text
    ids = [i["job_id"] for i in first.json()["jobs"]]
    assert ids[0] == ids[2] != ids[1]
    assert [i["created"] for i in first.json()["jobs"]] == [True, True, False]

    again = await client.post("/jobs/batch", json={"jobs": [b, a]})
    assert again.status_code == 200
    assert [i["job_id"] for i in again.json()["jobs"]] == [ids[1], ids[0]]

    reused = {**a, "payload": {"a": 2}}
    conflict = await client.post(
        "/jobs/batch", json={"jobs": [{"queue_name": "t-batch-key", "payload": {}}, reused]}
    )
    assert conflict.status_code == 409
    assert conflict.json()["detail"][0]["loc"] == ["body", "jobs", 1, "idempotency_key"]
    assert await job_count(rt, "t-batch-key") == 2  # the valid first item was rolled back too

    # A single POST and a batch item share the keys.
    single = await client.post(
        "/jobs",
        json={"queue_name": "t-batch-key", "payload": {"b": 1}},
        headers={"Idempotency-Key": "b"},
    )
    assert (single.status_code, single.json()["job_id"]) == (200, ids[1])


async def test_post_jobs_rejects_bad_fields_naming_them(
    runtime: Runtime, client: httpx.AsyncClient, settings: Settings
) -> None:
    rt = runtime
    settings.max_payload_bytes = 50
    await add_queue(rt, "t-validate")
    unknown = await client.post("/jobs", json={"queue_name": "nope", "payload": {}})
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["loc"] == ["body", "queue_name"]
    big = await client.post("/jobs", json={"queue_name": "t-validate", "payload": {"x": "y" * 80}})
    assert big.status_code == 413
    assert big.json()["detail"][0]["loc"] == ["body", "payload"]
    long_key = await client.post(
        "/jobs",
        json={"queue_name": "t-validate", "payload": {}},
        headers={"Idempotency-Key": "k" * 256},
    )
    assert long_key.status_code == 422
    assert long_key.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    assert await job_count(rt, "t-validate") == 0
