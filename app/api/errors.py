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
    """A request field is wrong: answered with FastAPI's validation-error shape.

    `location` is where the field is: "body" (default), "query", "header" or "path".
    """

    def __init__(
        self, status_code: int, field: str, msg: str, type_: str, *, location: str = "body"
    ) -> None:
        super().__init__(msg)
        self.status_code = status_code
        self.field = field
        self.msg = msg
        self.type = type_
        self.location = location

    def body(self) -> dict[str, Any]:
        return {
            "detail": [{"loc": [self.location, self.field], "msg": self.msg, "type": self.type}]
        }


class InputErrors(ValueError):
    """Several input problems at once (e.g. the bad items of a batch), each with its own
    `loc`, answered in the same shape as FieldError."""

    def __init__(self, status_code: int, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} input errors")
        self.status_code = status_code
        self.errors = errors

    def body(self) -> dict[str, Any]:
        return {"detail": self.errors}


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

    app.add_exception_handler(asyncpg.exceptions.CharacterNotInRepertoireError, _bad_text)
    app.add_exception_handler(asyncpg.exceptions.UntranslatableCharacterError, _bad_text)
    for exc_type in UNAVAILABLE:
        app.add_exception_handler(exc_type, _unavailable)
    app.add_exception_handler(redis.exceptions.ConnectionError, _unavailable)
