"""Input errors, in one shape for every door: the API answers them as
`{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}` with their status code, and the
producer library raises them (`JobRejected`) with the same `errors` and `status_code`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


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


def error_item(loc: Sequence[str | int], msg: str, type_: str) -> dict[str, Any]:
    """One entry of `detail`."""
    return {"loc": list(loc), "msg": msg, "type": type_}


def unknown_queue_error(queue_name: str, loc: Sequence[str | int]) -> dict[str, Any]:
    return error_item([*loc, "queue_name"], f"unknown queue {queue_name!r}", "unknown_queue")


def key_conflict_error(loc: Sequence[str | int], field: str) -> dict[str, Any]:
    return error_item(
        [*loc, field],
        "this idempotency key was used with a different request",
        "idempotency_key_reused",
    )
