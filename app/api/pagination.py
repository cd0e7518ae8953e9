"""Cursor pagination shared by every list: an opaque cursor (base64 of the last row's sort
key) and a bounded limit; answers are `{items, next_cursor}`."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

import orjson
from fastapi import Query
from pydantic import BaseModel, Field

from app.jobs.errors import FieldError

LIMIT_DEFAULT = 50
LIMIT_MAX = 500

T = TypeVar("T")

LimitQuery = Annotated[
    int,
    Query(ge=1, le=LIMIT_MAX, description=f"Items per page, 1-{LIMIT_MAX}."),
]
CursorQuery = Annotated[
    str | None,
    Query(
        max_length=512,
        description="`next_cursor` of the previous page; omitted for the first page.",
    ),
]


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


def encode_cursor(*parts: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(parts, default=str)).decode().rstrip("=")


def _decode(cursor: str) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parts = orjson.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise _invalid() from exc
    if not isinstance(parts, list):
        raise _invalid()
    return parts


def _invalid() -> FieldError:
    return FieldError(
        422,
        "cursor",
        "invalid cursor: pass the next_cursor of a previous page unchanged",
        "invalid_cursor",
        location="query",
    )


def time_id_cursor(row_time: datetime, row_id: uuid.UUID) -> str:
    return encode_cursor(row_time.isoformat(), str(row_id))


def decode_time_id_cursor(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    """(timestamp, id) of the last row of the previous page; 422 on a bad cursor."""
    if cursor is None:
        return None
    parts = _decode(cursor)
    try:
        when, ident = parts
        at = datetime.fromisoformat(when)
        if at.tzinfo is None:
            raise ValueError("naive time")
        at.astimezone(UTC)  # OverflowError past year 9999 or before year 1
        return at, uuid.UUID(ident)
    except (TypeError, ValueError, OverflowError) as exc:
        raise _invalid() from exc


def name_cursor(name: str) -> str:
    return encode_cursor(name)


def decode_name_cursor(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    parts = _decode(cursor)
    if len(parts) != 1 or not isinstance(parts[0], str):
        raise _invalid()
    name: str = parts[0]
    return name


def page_of(rows: list[T], limit: int) -> tuple[list[T], T | None]:
    """(rows of this page, last row if there is a next page); fetch `limit + 1` rows."""
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1]
    return rows, None
