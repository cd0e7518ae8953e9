"""What every route documents alike: the shapes of error bodies, and helpers for the
examples OpenAPI shows beside each response."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ErrorItem(BaseModel):
    loc: list[str | int] = Field(description='Where the problem is, e.g. ["body", "priority"].')
    msg: str
    type: str


class ValidationErrorOut(BaseModel):
    """Every 4xx about input: which field, and what is wrong with it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "detail": [
                        {
                            "loc": ["body", "queue_name"],
                            "msg": "unknown queue 'emails'",
                            "type": "unknown_queue",
                        }
                    ]
                }
            ]
        }
    )
    detail: list[ErrorItem]


class MessageOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"detail": "job not found"}]})
    detail: str


def documented(
    model: type[BaseModel], description: str, examples: dict[str, tuple[str, Any]]
) -> dict[str, Any]:
    """An entry of a route's `responses`: the body's model, and named examples (summary,
    value) of this very response, since error models are shared between statuses."""
    return {
        "model": model,
        "description": description,
        "content": {
            "application/json": {
                "examples": {
                    name: {"summary": summary, "value": value}
                    for name, (summary, value) in examples.items()
                }
            }
        },
    }


def field_error(loc: list[str | int], msg: str, type_: str) -> dict[str, Any]:
    return {"detail": [{"loc": loc, "msg": msg, "type": type_}]}


UNAVAILABLE_DETAIL = "a backing service (PostgreSQL) is unavailable; retry later"

UNAVAILABLE_EXAMPLES = {"unavailable": ("PostgreSQL is down", {"detail": UNAVAILABLE_DETAIL})}


def bad_job_id(description: str) -> dict[str, Any]:
    """The 422 of a route whose path holds a job id."""
    return documented(
        ValidationErrorOut,
        description,
        {
            "not_a_uuid": (
                "Malformed id",
                field_error(
                    ["path", "job_id"],
                    "Input should be a valid UUID, invalid length: found 3",
                    "uuid_parsing",
                ),
            )
        },
    )
