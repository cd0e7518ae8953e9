"""Errors as JSON: 4xx bodies say which field is wrong and why (app.jobs.errors); outages
are a 503."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from app.api.common import UNAVAILABLE_DETAIL
from app.jobs.errors import FieldError, InputErrors

log = logging.getLogger("hybridq.api")


CONFLICT_DETAIL = (
    "the request collided with a concurrent one (deadlock or serialization failure) and "
    "nothing was written; retry"
)

UNAVAILABLE = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.InterfaceError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)


def validation_errors(exc: RequestValidationError) -> list[dict[str, object]]:
    """FastAPI's validation errors in our shape: where (`loc`), what (`msg`, `type`).

    The rejected value itself is not echoed back: it may be any Python value (NaN, an
    infinite float, a 50-digit integer) that JSON cannot carry, and echoing a multi-MB
    body back to its sender only doubles its cost."""
    return [
        {
            "loc": [part if isinstance(part, int) else str(part) for part in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in exc.errors()
    ]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_errors(exc)}, status_code=422)

    @app.exception_handler(FieldError)
    async def _field_error(_request: Request, exc: FieldError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code)

    @app.exception_handler(InputErrors)
    async def _input_errors(_request: Request, exc: InputErrors) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code)

    async def _unavailable(_request: Request, exc: Exception) -> JSONResponse:
        log.warning("dependency unavailable: %r", exc)
        return JSONResponse(
            {"detail": UNAVAILABLE_DETAIL},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    async def _bad_text(_request: Request, exc: Exception) -> JSONResponse:
        # A NUL byte or a character PostgreSQL cannot store, in a query or path value.
        return JSONResponse(
            {
                "detail": [
                    {
                        "loc": ["request"],
                        "msg": "text must not contain NUL or characters PostgreSQL cannot store",
                        "type": "invalid_characters",
                    }
                ]
            },
            status_code=422,
        )

    async def _conflict(_request: Request, exc: Exception) -> JSONResponse:
        # A deadlock or serialization failure rolled the whole transaction back: nothing
        # was written, and the same request will very likely succeed when retried.
        log.warning("transaction rolled back by PostgreSQL, answered 503: %r", exc)
        return JSONResponse(
            {"detail": CONFLICT_DETAIL}, status_code=503, headers={"Retry-After": "1"}
        )

    app.add_exception_handler(asyncpg.exceptions.TransactionRollbackError, _conflict)
    app.add_exception_handler(asyncpg.exceptions.CharacterNotInRepertoireError, _bad_text)
    app.add_exception_handler(asyncpg.exceptions.UntranslatableCharacterError, _bad_text)
    for exc_type in UNAVAILABLE:
        app.add_exception_handler(exc_type, _unavailable)
    app.add_exception_handler(redis.exceptions.ConnectionError, _unavailable)
