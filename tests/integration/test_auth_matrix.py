"""Who may call what: every operation of the OpenAPI document, with no key, a wrong key,
a producer key and an admin key. Iterating the document means a new route cannot be
left out of the table."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from app.api.auth import digest
from app.settings import Settings
from tests.support.api import api_only, serve_app

PRODUCER, ADMIN = "matrix-producer-key", "matrix-admin-key"
PUBLIC = {("get", "/health"), ("get", "/health/ready"), ("get", "/metrics")}
PRODUCER_ROUTES = {
    ("post", "/jobs"),
    ("post", "/jobs/batch"),
    ("get", "/jobs"),
    ("get", "/jobs/{job_id}"),
    ("get", "/jobs/{job_id}/logs"),
}
DUMMY = {
    "job_id": "00000000-0000-0000-0000-000000000000",
    "name": "t-matrix",
    "address": "nobody@example.org",
}


@pytest.fixture
async def client(settings: Settings, clean_db: None) -> AsyncIterator[httpx.AsyncClient]:
    keyed = api_only(
        settings,
        auth_enabled=True,
        api_keys=[
            f"billing:producer:sha256:{digest(PRODUCER).hex()}",
            f"ops:admin:sha256:{digest(ADMIN).hex()}",
        ],
    )
    async with serve_app(keyed) as served:
        yield served.client


async def call(
    client: httpx.AsyncClient, method: str, path: str, key: str | None
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    url = path.format(**DUMMY)
    # An empty JSON object: enough to get past authentication, not to do anything.
    return await client.request(method, url, headers=headers, json={} if method != "get" else None)


async def test_every_route_admits_exactly_the_keys_of_its_scope(
    client: httpx.AsyncClient,
) -> None:
    spec = (await client.get("/openapi.json")).json()
    operations = [(m, p) for p, item in spec["paths"].items() for m in item]
    assert len(operations) == 19
    table: list[tuple[str, str, int, int, int, int]] = []
    for method, path in operations:
        none = await call(client, method, path, None)
        wrong = await call(client, method, path, "not-a-key")
        producer = await call(client, method, path, PRODUCER)
        admin = await call(client, method, path, ADMIN)
        table.append(
            (
                method,
                path,
                none.status_code,
                wrong.status_code,
                producer.status_code,
                admin.status_code,
            )
        )
        where = f"{method.upper()} {path}"
        assert admin.status_code not in (401, 403), where
        if (method, path) in PUBLIC:
            for r in (none, wrong, producer):
                assert r.status_code not in (401, 403), where
            continue
        for r in (none, wrong):
            assert r.status_code == 401, where
            assert r.headers["www-authenticate"] == "Bearer", where
        if (method, path) in PRODUCER_ROUTES:
            assert producer.status_code not in (401, 403), where
        else:
            assert producer.status_code == 403, where
            assert "lacks the 'admin' scope" in producer.json()["detail"], where
    print("\n" + "\n".join(f"{m.upper():6} {p:32} {a} {b} {c} {d}" for m, p, a, b, c, d in table))


async def test_docs_stay_public(client: httpx.AsyncClient) -> None:
    assert (await client.get("/docs")).status_code == 200
    assert (await client.get("/openapi.json")).status_code == 200


async def test_metrics_can_require_an_admin_key(settings: Settings, clean_db: None) -> None:
    keyed = api_only(
        settings,
        auth_enabled=True,
        metrics_public=False,
        api_keys=[
            f"billing:producer:sha256:{digest(PRODUCER).hex()}",
            f"ops:admin:sha256:{digest(ADMIN).hex()}",
        ],
    )
    async with serve_app(keyed) as served:
        assert (await served.client.get("/metrics")).status_code == 401
        producer = await served.client.get(
            "/metrics", headers={"Authorization": f"Bearer {PRODUCER}"}
        )
        assert producer.status_code == 403
        admin = await served.client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
        assert admin.status_code == 200
        assert "hybridq_" in admin.text
