"""The real app, lifespan included, behind an in-process HTTP client (no socket)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
from fastapi import FastAPI

from app.main import create_app
from app.registry import HandlerRegistry
from app.runtime import Runtime
from app.settings import Settings


@dataclass(slots=True)
class ServedApp:
    app: FastAPI
    client: httpx.AsyncClient

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime


@contextlib.asynccontextmanager
async def serve_app(
    settings: Settings, registry: HandlerRegistry | None = None
) -> AsyncIterator[ServedApp]:
    """Run the app's lifespan (pools open, background services as `settings` say) and
    yield a client that talks to it in-process."""
    app = create_app(settings, registry or HandlerRegistry())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hybridq") as client:
            yield ServedApp(app=app, client=client)


def api_only(settings: Settings, **overrides: object) -> Settings:
    """`settings` without the embedded migrator and worker: requests alone act."""
    return settings.replace(embed_migrator=False, embed_worker=False, **overrides)
