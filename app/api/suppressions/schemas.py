"""Bodies of the suppression routes."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict

from app.api.pagination import Page
from app.db.suppressions import Suppression

ADDRESS_MAX = 320  # RFC 3696: 64 for the local part, @, 255 for the domain

EXAMPLE: dict[str, Any] = {
    "address": "nobody@example.org",
    "reason": "hard bounce 5.1.1: smtp; 550 5.1.1 <nobody@example.org>: User unknown",
    "source": "bounce",
    "job_id": "0b6f7c1e-4d1a-4c55-9d5e-3f4c2a1b0e9d",
    "created_at": "2026-12-01T09:30:00Z",
}


class SuppressionOut(BaseModel):
    """An address no email is sent to, since when and why."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE]})

    address: str
    reason: str
    source: str
    job_id: uuid.UUID | None
    created_at: AwareDatetime

    @classmethod
    def of(cls, s: Suppression) -> SuppressionOut:
        return cls(
            address=s.address,
            reason=s.reason,
            source=s.source,
            job_id=s.job_id,
            created_at=s.created_at,
        )


class SuppressionPage(Page[SuppressionOut]):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"items": [EXAMPLE], "next_cursor": "WyJub2JvZHlAZXhhbXBsZS5vcmciXQ"}]
        }
    )
