"""Errors as JSON: 4xx bodies say which field is wrong and why; outages are a 503."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app.api.schemas import UNAVAILABLE_DETAIL

log = logging.getLogger("hybridq.api")


class FieldError(Exception):
    """A request field is wrong: answered with FastAPI's validation-error shape."""

    def __init__(self, status_code: int, field: str, msg: str, type_: str) -> None:
        super().__init__(msg)
        self.status_code = status_code
        self.field = field
        self.msg = msg
        self.type = type_

    def body(self) -> dict[str, Any]:
        return {"detail": [{"loc": ["body", self.field], "msg": self.msg, "type": self.type}]}


class PayloadErrors(Exception):
    """The payload does not match its queue's schema: 422 locating each problem."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("payload does not match the queue's schema")
        self.errors = errors

    def body(self) -> dict[str, Any]:
        return {
            "detail": [
                {"loc": ["body", "payload", *e["loc"]], "msg": e["msg"], "type": e["type"]}
                for e in self.errors
            ]
        }


UNAVAILABLE = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.InterfaceError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PayloadErrors)
    async def _payload_errors(_request: Request, exc: PayloadErrors) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=422)

    @app.exception_handler(FieldError)
    async def _field_error(_request: Request, exc: FieldError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code)

    async def _unavailable(_request: Request, exc: Exception) -> JSONResponse:
        log.warning("dependency unavailable: %r", exc)
        return JSONResponse(
            {"detail": UNAVAILABLE_DETAIL},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    for exc_type in UNAVAILABLE:
        app.add_exception_handler(exc_type, _unavailable)
    app.add_exception_handler(redis.exceptions.ConnectionError, _unavailable)
