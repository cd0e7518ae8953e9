"""The OpenAPI document (/openapi.json, rendered at /docs) describes every endpoint: a
summary, its errors, and examples of every body that validate against the body's model.

The walk covers every operation the app serves, so a new endpoint must be added to
ERROR_RESPONSES (deciding which errors it documents) before this passes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from app.api.openapi import _models
from app.main import create_app
from app.settings import Settings

# The errors each operation documents. /health does no I/O, so it cannot fail but crash.
ERROR_RESPONSES: dict[tuple[str, str], set[str]] = {
    ("post", "/jobs"): {"401", "403", "409", "413", "422", "503"},
    ("get", "/jobs"): {"401", "403", "422", "503"},
    ("get", "/jobs/{job_id}"): {"401", "403", "404", "422", "503"},
    ("get", "/jobs/{job_id}/logs"): {"401", "403", "404", "422", "503"},
    ("post", "/jobs/{job_id}/cancel"): {"401", "403", "404", "409", "422", "503"},
    ("post", "/jobs/batch"): {"401", "403", "409", "413", "422", "503"},
    ("get", "/dead-letter"): {"401", "403", "422", "503"},
    ("post", "/dead-letter/replay"): {"401", "403", "422", "503"},
    ("post", "/dead-letter/{job_id}/replay"): {"401", "403", "404", "409", "422", "503"},
    ("delete", "/dead-letter/{job_id}"): {"401", "403", "404", "409", "422", "503"},
    ("get", "/queues"): {"401", "403", "422", "503"},
    ("post", "/queues"): {"401", "403", "409", "422", "503"},
    ("patch", "/queues/{name}"): {"401", "403", "404", "422", "503"},
    ("get", "/health"): set(),
    ("get", "/health/ready"): {"503"},
    ("get", "/health/queues"): {"401", "403", "503"},
    ("get", "/metrics"): {"503"},
    ("get", "/suppressions"): {"401", "403", "422", "503"},
    ("delete", "/suppressions/{address}"): {"401", "403", "404", "422", "503"},
}

MEDIA = "application/json"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # Serving the docs needs no pools: no lifespan, no PostgreSQL, no Redis.
    app = create_app(Settings(api_keys=["docs:admin:sha256:" + "00" * 32]))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hybridq") as client:
        yield client


@pytest.fixture
async def spec(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            yield method, path, operation


def model_of(media: dict[str, Any]) -> type[BaseModel]:
    """The pydantic model a body's schema was generated from (one of ours, by name)."""
    ref: str = media["schema"]["$ref"]
    name = ref.rsplit("/", 1)[1]
    model = _models().get(name)
    assert isinstance(model, type) and issubclass(model, BaseModel), (
        f"{ref} is not a model of app.api or app.jobs (FastAPI's default?)"
    )
    return model


def examples_of(spec: dict[str, Any], media: dict[str, Any]) -> list[Any]:
    """The body's own examples, else its schema's."""
    if "example" in media:
        return [media["example"]]
    if "examples" in media:
        return [e["value"] for e in media["examples"].values()]
    name = media["schema"]["$ref"].rsplit("/", 1)[1]
    found: list[Any] = spec["components"]["schemas"][name].get("examples", [])
    return found


async def test_docs_page_renders_the_openapi_document(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs")

    assert response.status_code == 200
    assert "swagger-ui" in response.text
    assert "/openapi.json" in response.text


async def test_every_operation_is_known_and_has_a_summary(spec: dict[str, Any]) -> None:
    served = {(method, path) for method, path, _ in operations(spec)}
    assert served == set(ERROR_RESPONSES)
    for method, path, operation in operations(spec):
        assert operation.get("summary"), f"{method} {path} has no summary"
        assert operation.get("description"), f"{method} {path} has no description"


async def test_every_operation_documents_its_errors(spec: dict[str, Any]) -> None:
    for method, path, operation in operations(spec):
        errors = {code for code in operation["responses"] if int(code) >= 400}
        assert errors == ERROR_RESPONSES[(method, path)], f"{method} {path}"
        if operation.get("parameters") or operation.get("requestBody"):
            assert "422" in errors, f"{method} {path} takes input but documents no 422"


async def test_every_response_is_described_with_examples_of_its_body(
    spec: dict[str, Any],
) -> None:
    for method, path, operation in operations(spec):
        for code, response in operation["responses"].items():
            where = f"{method} {path} {code}"
            assert response["description"] not in ("", "Successful Response"), where
            if MEDIA not in response["content"]:
                # Not JSON (GET /metrics: Prometheus text): an example of that body.
                ((_type, media),) = response["content"].items()
                assert media.get("example"), f"{where}: no example of its text body"
                continue
            media = response["content"][MEDIA]
            examples = examples_of(spec, media)
            assert examples, f"{where}: no example"
            if int(code) >= 400:
                # Error bodies share a model across statuses, so a model-wide example
                # would show, say, an unknown queue under 413: each error has its own.
                assert "example" in media or "examples" in media, f"{where}: no own example"
            model = model_of(media)
            for example in examples:
                model.model_validate(example)


async def test_request_bodies_have_examples_that_the_api_accepts(spec: dict[str, Any]) -> None:
    bodies = [
        (method, path, op["requestBody"])
        for method, path, op in operations(spec)
        if "requestBody" in op
    ]
    assert bodies, "POST /jobs has a request body"
    for method, path, body in bodies:
        media = body["content"][MEDIA]
        examples = examples_of(spec, media)
        assert examples, f"{method} {path}: no request example"
        model = model_of(media)
        for example in examples:
            model.model_validate(example)
