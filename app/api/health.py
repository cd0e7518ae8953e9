"""Health: cheap liveness for load balancers, and readiness of PostgreSQL and Redis."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import RuntimeDep
from app.api.schemas import READY_RESPONSES, HealthOut, ReadyOut

router = APIRouter(prefix="/health", tags=["health"])

READY_TIMEOUT = 2.0


@router.get(
    "",
    response_model=HealthOut,
    summary="Liveness",
    description="No I/O: the process is up.",
    response_description="The process is up.",
)
async def health() -> HealthOut:
    return HealthOut(status="ok")


@router.get(
    "/ready",
    response_model=ReadyOut,
    summary="Readiness",
    description="Checks PostgreSQL and Redis; 503 names the one that failed.",
    response_description="PostgreSQL and Redis both answer.",
    responses=READY_RESPONSES,
)
async def ready(rt: RuntimeDep) -> JSONResponse:
    async def check_postgres() -> None:
        await rt.pool.fetchval("SELECT 1", timeout=READY_TIMEOUT)

    async def check_redis() -> None:
        await rt.redis.ping()

    checks: dict[str, str] = {}
    for name, check in (("postgres", check_postgres), ("redis", check_redis)):
        try:
            await asyncio.wait_for(check(), READY_TIMEOUT)
            checks[name] = "ok"
        except Exception as exc:
            # A timeout's message is empty: then its type is the reason.
            checks[name] = f"error: {str(exc) or type(exc).__name__}"[:200]
    ok = all(v == "ok" for v in checks.values())
    body = ReadyOut(status="ok" if ok else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)
